//! Validation of what a member types into the Create Application form.

use crate::domain::application::{AppDetails, quoted};
use crate::domain::catalog::ScopeCatalog;
use serde::{Deserialize, Serialize};
use std::fmt;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use url::{Host, Url};

pub const NAME_MAX_CHARS: usize = 100;
pub const URI_MAX_CHARS: usize = 2000;
pub const DESCRIPTION_MAX_CHARS: usize = 1000;
pub const MAX_REDIRECT_URLS: usize = 10;
/// Ten URLs of up to 2000 characters each, one per line.
pub const REDIRECT_FIELD_MAX_CHARS: usize = 4000;

/// The form exactly as typed, kept so a rejected form can be shown again
/// without losing anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppForm {
    pub name: String,
    pub uri: String,
    pub description: String,
    /// One URL per line.
    pub post_login_urls: String,
    /// One URL per line.
    pub post_logout_urls: String,
}

/// A form field, as the user knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Field {
    Name,
    Uri,
    Description,
    PostLoginUrls,
    PostLogoutUrls,
    Scopes,
}

impl Field {
    pub fn label(self) -> &'static str {
        match self {
            Self::Name => "Name",
            Self::Uri => "URI",
            Self::Description => "Description",
            Self::PostLoginUrls => "Post-login redirect URLs",
            Self::PostLogoutUrls => "Post-logout redirect URLs",
            Self::Scopes => "Scopes",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: Field,
    pub message: String,
}

/// Every problem found in one submission, so the user can fix them all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn single(field: Field, message: impl Into<String>) -> Self {
        Self(vec![FieldError {
            field,
            message: message.into(),
        }])
    }

    pub fn on(&self, field: Field) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", e.field.label(), e.message)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: Field, message: impl Into<String>) {
        self.0.push(FieldError {
            field,
            message: message.into(),
        });
    }
}

/// The key two names share when they differ only in case or in Unicode
/// compatibility forms (`ＦＲＯＮＴ desk` and `Front Desk`): names are unique
/// per guild by it. NFKC, then lower case, then NFKC again, since lower-casing
/// can leave a string that is no longer normalized. Computed here rather than
/// in SQL, which has no NFKC (and SQLite's `lower()` is ASCII only); the
/// stored keys were recomputed with it once (`store::data_migrations`).
pub fn name_key(name: &str) -> String {
    let folded: String = name
        .nfkc()
        .collect::<String>()
        .to_lowercase()
        .nfkc()
        .collect();
    folded.trim().to_owned()
}

/// The first Unicode format character (general category Cf: bidi overrides
/// such as U+202E, zero-width spaces and joiners, the soft hyphen) in `text`.
/// They are invisible, so a name or URL holding one reads as something else:
/// `txt.exe` written backwards, or two names that look the same.
fn format_character(text: &str) -> Option<char> {
    text.chars()
        .find(|c| c.general_category() == GeneralCategory::Format)
}

/// The message for a format character, naming it by code point only: echoing
/// it would carry the trick into the reply.
fn invisible(c: char) -> String {
    format!(
        "must not contain invisible formatting characters such as bidi overrides or \
         zero-width spaces (found U+{:04X})",
        u32::from(c)
    )
}

/// Checks the whole form, reporting every problem, and returns it cleaned up:
/// trimmed, blank lines dropped, duplicate URLs removed.
pub fn validate_form(form: &AppForm) -> Result<AppDetails, ValidationErrors> {
    let mut problems = Problems::default();

    let name = form.name.trim();
    let name_chars = name.chars().count();
    if name_chars == 0 {
        problems.add(Field::Name, "is required");
    } else if name_chars > NAME_MAX_CHARS {
        problems.add(
            Field::Name,
            format!("must be at most {NAME_MAX_CHARS} characters (it has {name_chars})"),
        );
    }
    if name.chars().any(char::is_control) {
        problems.add(
            Field::Name,
            "must not contain control characters such as line breaks or tabs",
        );
    }
    if let Some(c) = format_character(name) {
        problems.add(Field::Name, invisible(c));
    }

    let uri = form.uri.trim();
    if uri.is_empty() {
        problems.add(Field::Uri, "is required");
    } else if let Some(c) = format_character(uri) {
        problems.add(Field::Uri, invisible(c));
    } else if let Err(message) = check_uri(uri) {
        problems.add(Field::Uri, message);
    }

    let description = form.description.trim();
    let description_chars = description.chars().count();
    if description_chars > DESCRIPTION_MAX_CHARS {
        problems.add(
            Field::Description,
            format!(
                "must be at most {DESCRIPTION_MAX_CHARS} characters (it has {description_chars})"
            ),
        );
    }
    if description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        problems.add(Field::Description, "must not contain control characters");
    }
    if let Some(c) = format_character(description) {
        problems.add(Field::Description, invisible(c));
    }

    let post_login_urls = redirect_urls(&form.post_login_urls, Field::PostLoginUrls, &mut problems);
    let post_logout_urls =
        redirect_urls(&form.post_logout_urls, Field::PostLogoutUrls, &mut problems);

    if problems.0.is_empty() {
        Ok(AppDetails {
            name: name.to_owned(),
            uri: uri.to_owned(),
            description: description.to_owned(),
            post_login_urls,
            post_logout_urls,
        })
    } else {
        Err(ValidationErrors(problems.0))
    }
}

fn parse_web_url(text: &str) -> Result<Url, String> {
    if text.chars().count() > URI_MAX_CHARS {
        return Err(format!("must be at most {URI_MAX_CHARS} characters"));
    }
    // Messages quote the URL with `quoted`, so a backtick in it cannot end
    // the code span and turn the rest of the reply into markdown.
    let shown = quoted(text);
    let url = Url::parse(text).map_err(|e| format!("{shown} is not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{shown} uses the `{}:` scheme; only http and https are allowed",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err(format!("{shown} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{shown} must not contain a user name or password"));
    }
    // Plain http only to the developer's own machine, for the app's URI as
    // for its redirect targets.
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(format!(
            "{shown} must use https (http is allowed only for localhost)"
        ));
    }
    Ok(url)
}

fn check_uri(text: &str) -> Result<(), String> {
    parse_web_url(text).map(drop)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// One URL a line. Redirect targets get OAuth's rules: https (plain http only
/// to the developer's own machine, as for the URI) and no fragment.
fn redirect_urls(text: &str, field: Field, problems: &mut Problems) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    if text.chars().count() > REDIRECT_FIELD_MAX_CHARS {
        problems.add(
            field,
            format!("must be at most {REDIRECT_FIELD_MAX_CHARS} characters in all"),
        );
        return urls;
    }
    let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    for (number, line) in (1..).zip(lines) {
        if let Some(c) = format_character(line) {
            // Named by its line, not quoted: see `invisible`.
            problems.add(field, format!("URL {number} {}", invisible(c)));
            continue;
        }
        let url = match parse_web_url(line) {
            Ok(url) => url,
            Err(message) => {
                problems.add(field, message);
                continue;
            }
        };
        if url.fragment().is_some() {
            problems.add(
                field,
                format!("{} must not contain a `#` fragment", quoted(line)),
            );
            continue;
        }
        if !urls.iter().any(|u| u == line) {
            urls.push(line.to_owned());
        }
    }
    if urls.len() > MAX_REDIRECT_URLS {
        problems.add(
            field,
            format!(
                "at most {MAX_REDIRECT_URLS} URLs are allowed (there are {})",
                urls.len()
            ),
        );
    }
    urls
}

/// Checks the chosen API groups against the catalog; returns them without
/// duplicates, in the order chosen.
pub fn validate_scopes(
    scopes: &[String],
    catalog: &ScopeCatalog,
) -> Result<Vec<String>, ValidationErrors> {
    let mut problems = Problems::default();
    let mut chosen: Vec<String> = Vec::new();
    for scope in scopes {
        if !catalog.contains(scope) {
            problems.add(
                Field::Scopes,
                format!("{} is not an API group of this catalog", quoted(scope)),
            );
        } else if !chosen.contains(scope) {
            chosen.push(scope.clone());
        }
    }
    if scopes.is_empty() {
        problems.add(Field::Scopes, "choose at least one API group");
    }
    if problems.0.is_empty() {
        Ok(chosen)
    } else {
        Err(ValidationErrors(problems.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AppForm {
        AppForm {
            name: "Spa Mobile".into(),
            uri: "https://spa.example.com".into(),
            description: "Guests book treatments.".into(),
            post_login_urls: "https://spa.example.com/callback\nhttp://localhost:3000/cb".into(),
            post_logout_urls: "https://spa.example.com/bye".into(),
        }
    }

    fn problems(form: AppForm) -> Vec<(Field, String)> {
        validate_form(&form)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    /// Each case: a form broken one way, the field blamed, and a piece of the message.
    #[test]
    fn each_rule_rejects_with_its_message() {
        let cases: Vec<(&str, AppForm, Field, &str)> = vec![
            (
                "empty name",
                AppForm {
                    name: "".into(),
                    ..valid()
                },
                Field::Name,
                "required",
            ),
            (
                "blank name",
                AppForm {
                    name: "   ".into(),
                    ..valid()
                },
                Field::Name,
                "required",
            ),
            (
                "long name",
                AppForm {
                    name: "x".repeat(101),
                    ..valid()
                },
                Field::Name,
                "at most 100",
            ),
            (
                "newline in name",
                AppForm {
                    name: "a\nb".into(),
                    ..valid()
                },
                Field::Name,
                "control",
            ),
            (
                "tab in name",
                AppForm {
                    name: "a\tb".into(),
                    ..valid()
                },
                Field::Name,
                "control",
            ),
            (
                "NUL in name",
                AppForm {
                    name: "a\0b".into(),
                    ..valid()
                },
                Field::Name,
                "control",
            ),
            (
                "empty uri",
                AppForm {
                    uri: "".into(),
                    ..valid()
                },
                Field::Uri,
                "required",
            ),
            (
                "relative uri",
                AppForm {
                    uri: "/spa".into(),
                    ..valid()
                },
                Field::Uri,
                "not an absolute URL",
            ),
            (
                "javascript uri",
                AppForm {
                    uri: "javascript:alert(1)".into(),
                    ..valid()
                },
                Field::Uri,
                "`javascript:` scheme",
            ),
            (
                "data uri",
                AppForm {
                    uri: "data:text/html,<b>x</b>".into(),
                    ..valid()
                },
                Field::Uri,
                "`data:` scheme",
            ),
            (
                "ftp uri",
                AppForm {
                    uri: "ftp://files.example.com".into(),
                    ..valid()
                },
                Field::Uri,
                "`ftp:` scheme",
            ),
            (
                "no host",
                AppForm {
                    uri: "https://".into(),
                    ..valid()
                },
                Field::Uri,
                "not an absolute URL",
            ),
            (
                "credentials in uri",
                AppForm {
                    uri: "https://u:p@spa.example.com".into(),
                    ..valid()
                },
                Field::Uri,
                "user name or password",
            ),
            (
                "long uri",
                AppForm {
                    uri: format!("https://a.example.com/{}", "x".repeat(2000)),
                    ..valid()
                },
                Field::Uri,
                "at most 2000",
            ),
            (
                "long description",
                AppForm {
                    description: "d".repeat(1001),
                    ..valid()
                },
                Field::Description,
                "at most 1000",
            ),
            (
                "bell in description",
                AppForm {
                    description: "ding\u{7}".into(),
                    ..valid()
                },
                Field::Description,
                "control",
            ),
            (
                "http login redirect",
                AppForm {
                    post_login_urls: "http://spa.example.com/cb".into(),
                    ..valid()
                },
                Field::PostLoginUrls,
                "must use https",
            ),
            (
                "javascript login redirect",
                AppForm {
                    post_login_urls: "javascript:alert(document.cookie)".into(),
                    ..valid()
                },
                Field::PostLoginUrls,
                "`javascript:` scheme",
            ),
            (
                "JAVASCRIPT upper case",
                AppForm {
                    post_login_urls: "JavaScript:alert(1)".into(),
                    ..valid()
                },
                Field::PostLoginUrls,
                "`javascript:` scheme",
            ),
            (
                "data logout redirect",
                AppForm {
                    post_logout_urls: "data:text/html;base64,PGI+".into(),
                    ..valid()
                },
                Field::PostLogoutUrls,
                "`data:` scheme",
            ),
            (
                "relative logout redirect",
                AppForm {
                    post_logout_urls: "/logout".into(),
                    ..valid()
                },
                Field::PostLogoutUrls,
                "not an absolute URL",
            ),
            (
                "fragment in redirect",
                AppForm {
                    post_login_urls: "https://spa.example.com/cb#x".into(),
                    ..valid()
                },
                Field::PostLoginUrls,
                "fragment",
            ),
            (
                "11 login redirects",
                AppForm {
                    post_login_urls: (0..11)
                        .map(|i| format!("https://a.example.com/{i}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    ..valid()
                },
                Field::PostLoginUrls,
                "at most 10 URLs",
            ),
            (
                "11 logout redirects",
                AppForm {
                    post_logout_urls: (0..11)
                        .map(|i| format!("https://a.example.com/{i}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    ..valid()
                },
                Field::PostLogoutUrls,
                "at most 10 URLs",
            ),
            (
                "http to a look-alike host",
                AppForm {
                    post_login_urls: "http://localhost.evil.example/cb".into(),
                    ..valid()
                },
                Field::PostLoginUrls,
                "must use https",
            ),
            (
                "redirect with password",
                AppForm {
                    post_logout_urls: "https://a:b@spa.example.com".into(),
                    ..valid()
                },
                Field::PostLogoutUrls,
                "user name or password",
            ),
            (
                "file redirect",
                AppForm {
                    post_logout_urls: "file:///etc/passwd".into(),
                    ..valid()
                },
                Field::PostLogoutUrls,
                "`file:` scheme",
            ),
            (
                "oversized redirect field",
                AppForm {
                    post_login_urls: "h".repeat(4001),
                    ..valid()
                },
                Field::PostLoginUrls,
                "in all",
            ),
            (
                "vbscript uri",
                AppForm {
                    uri: "vbscript:msgbox".into(),
                    ..valid()
                },
                Field::Uri,
                "`vbscript:` scheme",
            ),
            (
                "bare word uri",
                AppForm {
                    uri: "spa".into(),
                    ..valid()
                },
                Field::Uri,
                "not an absolute URL",
            ),
            (
                "right-to-left override in name",
                AppForm {
                    name: "Spa\u{202E}gpj.exe".into(),
                    ..valid()
                },
                Field::Name,
                "invisible formatting characters",
            ),
            (
                "zero-width space in name",
                AppForm {
                    name: "Front\u{200B}Desk".into(),
                    ..valid()
                },
                Field::Name,
                "(found U+200B)",
            ),
            (
                "zero-width joiner in description",
                AppForm {
                    description: "Guests\u{200D} book".into(),
                    ..valid()
                },
                Field::Description,
                "(found U+200D)",
            ),
            (
                "left-to-right isolate in description",
                AppForm {
                    description: "Guests \u{2066}book\u{2069}".into(),
                    ..valid()
                },
                Field::Description,
                "(found U+2066)",
            ),
            (
                "byte order mark in uri",
                AppForm {
                    uri: "https://spa\u{FEFF}.example.com".into(),
                    ..valid()
                },
                Field::Uri,
                "(found U+FEFF)",
            ),
            (
                "bidi override in login redirect",
                AppForm {
                    post_login_urls:
                        "https://spa.example.com/cb\nhttps://spa.example.com/\u{202E}bc".into(),
                    ..valid()
                },
                Field::PostLoginUrls,
                "URL 2 must not contain invisible formatting characters",
            ),
            (
                "soft hyphen in logout redirect",
                AppForm {
                    post_logout_urls: "https://spa.exa\u{AD}mple.com/bye".into(),
                    ..valid()
                },
                Field::PostLogoutUrls,
                "(found U+00AD)",
            ),
            (
                "http uri off localhost",
                AppForm {
                    uri: "http://spa.example.com".into(),
                    ..valid()
                },
                Field::Uri,
                "must use https (http is allowed only for localhost)",
            ),
            (
                "http uri to a look-alike host",
                AppForm {
                    uri: "http://localhost.evil.example".into(),
                    ..valid()
                },
                Field::Uri,
                "must use https",
            ),
            (
                "backtick in a bad uri stays quoted",
                AppForm {
                    uri: "ftp://x` [a](https://evil.example)".into(),
                    ..valid()
                },
                Field::Uri,
                "`ftp://xˋ [a](https://evil.example)`",
            ),
        ];
        assert!(cases.len() >= 40);
        for (what, form, field, needle) in cases {
            let found = problems(form);
            assert!(
                found.iter().any(|(f, m)| *f == field && m.contains(needle)),
                "{what}: expected {field:?} ~ {needle:?}, got {found:?}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let form = AppForm {
            name: "".into(),
            uri: "javascript:void(0)".into(),
            description: "d".repeat(1001),
            post_login_urls: "http://example.com/cb".into(),
            post_logout_urls: "nope".into(),
        };
        let fields: Vec<Field> = problems(form).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                Field::Name,
                Field::Uri,
                Field::Description,
                Field::PostLoginUrls,
                Field::PostLogoutUrls
            ]
        );
    }

    #[test]
    fn valid_form_is_cleaned_up() {
        let form = AppForm {
            name: "  Spa Mobile  ".into(),
            post_login_urls: "https://a.example.com/cb\n\n  https://a.example.com/cb  \nhttp://127.0.0.1:8080/cb\nhttp://[::1]/cb".into(),
            post_logout_urls: "".into(),
            ..valid()
        };
        let details = validate_form(&form).unwrap();
        assert_eq!(details.name, "Spa Mobile");
        assert_eq!(
            details.post_login_urls,
            vec![
                "https://a.example.com/cb",
                "http://127.0.0.1:8080/cb",
                "http://[::1]/cb"
            ]
        );
        assert!(details.post_logout_urls.is_empty());
        // Ten distinct URLs plus duplicates are fine: duplicates do not count.
        let mut ten: Vec<String> = (0..10)
            .map(|i| format!("https://a.example.com/{i}"))
            .collect();
        ten.extend(ten.clone());
        let form = AppForm {
            post_login_urls: ten.join("\n"),
            ..valid()
        };
        assert_eq!(validate_form(&form).unwrap().post_login_urls.len(), 10);
        // Unicode letters count as one character each.
        let form = AppForm {
            name: "é".repeat(100),
            ..valid()
        };
        assert!(validate_form(&form).is_ok());
    }

    #[test]
    fn names_compare_without_case() {
        assert_eq!(name_key(" Spa MOBILE "), name_key("spa mobile"));
        assert_eq!(name_key("ÉCLAT"), name_key("éclat"));
    }

    /// Compatibility forms of a name share its key: each pair collides.
    #[test]
    fn names_compare_after_nfkc() {
        let same = [
            ("ＦＲＯＮＴ desk", "Front Desk"),
            ("ＦＲＯＮＴ\u{3000}ｄｅｓｋ", "front desk"),
            ("Ｓｐａ Ｍｏｂｉｌｅ", "SPA MOBILE"),
            // Decomposed é (e + combining acute) and the precomposed one.
            ("E\u{301}clat", "éclat"),
            ("ﬁle desk", "FILE DESK"),
            ("Spa ②", "spa 2"),
            ("\u{212A}elvin", "kelvin"),
        ];
        for (a, b) in same {
            assert_eq!(name_key(a), name_key(b), "{a:?} vs {b:?}");
        }
        // Cross-script look-alikes stay distinct: Cyrillic а is not Latin a.
        assert_ne!(name_key("Sp\u{430}"), name_key("Spa"));
        assert_eq!(name_key("ＦＲＯＮＴ desk"), "front desk");
        // A key is its own key: recomputing stored keys changes nothing twice.
        for (a, _) in same {
            assert_eq!(name_key(&name_key(a)), name_key(a), "{a:?}");
        }
    }

    #[test]
    fn visible_unicode_is_accepted() {
        let form = AppForm {
            name: "Spa Café 東京 🧖".into(),
            description: "Réservez vos soins. 予約できます。".into(),
            uri: "http://localhost:3000".into(),
            ..valid()
        };
        assert!(validate_form(&form).is_ok(), "{:?}", validate_form(&form));
    }

    /// A URL with a format character is named by its position, never
    /// echoed: the reply would otherwise carry the override too.
    #[test]
    fn format_characters_are_never_echoed() {
        let form = AppForm {
            name: "a\u{202E}b".into(),
            uri: "https://a\u{202E}.example.com".into(),
            description: "d\u{202E}".into(),
            post_login_urls: "https://\u{202E}x.example.com".into(),
            post_logout_urls: "https://x.example.com/\u{202E}".into(),
        };
        let found = problems(form);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(
            found.iter().all(|(_, m)| !m.contains('\u{202E}')),
            "{found:?}"
        );
    }

    #[test]
    fn scopes_must_exist_and_be_chosen() {
        let catalog = ScopeCatalog::builtin();
        let err = validate_scopes(&[], &catalog).unwrap_err();
        assert!(err.to_string().contains("at least one"));
        let err = validate_scopes(&["appointments".into(), "teleportation".into()], &catalog)
            .unwrap_err();
        assert_eq!(
            err.on(Field::Scopes).collect::<Vec<_>>(),
            vec!["`teleportation` is not an API group of this catalog"]
        );
        let ok = validate_scopes(
            &["guests".into(), "appointments".into(), "guests".into()],
            &catalog,
        )
        .unwrap();
        assert_eq!(ok, vec!["guests", "appointments"]);
    }
}
