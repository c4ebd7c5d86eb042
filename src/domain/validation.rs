//! Validation of what a member types into the Create Application form.

use crate::domain::application::AppDetails;
use crate::domain::catalog::ScopeCatalog;
use serde::{Deserialize, Serialize};
use std::fmt;
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

/// The key two names share when they differ only in case: names are unique
/// per guild ignoring case. Computed here rather than with SQL `lower()`,
/// which SQLite applies to ASCII only.
pub fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
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

    let uri = form.uri.trim();
    if uri.is_empty() {
        problems.add(Field::Uri, "is required");
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
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{text}` uses the `{}:` scheme; only http and https are allowed",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err(format!("`{text}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{text}` must not contain a user name or password"));
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

/// One URL a line. Redirect targets get OAuth's stricter rules: https (plain
/// http only to the developer's own machine) and no fragment.
fn redirect_urls(text: &str, field: Field, problems: &mut Problems) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    if text.chars().count() > REDIRECT_FIELD_MAX_CHARS {
        problems.add(
            field,
            format!("must be at most {REDIRECT_FIELD_MAX_CHARS} characters in all"),
        );
        return urls;
    }
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let url = match parse_web_url(line) {
            Ok(url) => url,
            Err(message) => {
                problems.add(field, message);
                continue;
            }
        };
        if url.scheme() == "http" && !is_loopback(&url) {
            problems.add(
                field,
                format!("`{line}` must use https (http is allowed only for localhost)"),
            );
            continue;
        }
        if url.fragment().is_some() {
            problems.add(field, format!("`{line}` must not contain a `#` fragment"));
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
                format!("`{scope}` is not an API group of this catalog"),
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
        ];
        assert!(cases.len() >= 30);
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
