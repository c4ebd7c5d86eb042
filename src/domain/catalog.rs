//! The scope catalog: the API groups an application can be granted, read from TOML and validated.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One Discord select menu holds at most 25 options, and every group is one option.
pub const MAX_GROUPS: usize = 25;

/// Keys are stored with credentials and used as select-option values, so they stay short
/// and limited to characters that never need escaping.
const MAX_KEY_CHARS: usize = 32;

/// Discord rejects select-option labels and descriptions longer than this.
const MAX_OPTION_TEXT_CHARS: usize = 100;

/// Summaries are shown next to option text in the same embeds, so they share its limit.
const MAX_SUMMARY_CHARS: usize = 100;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A validated set of API groups; only `from_toml` builds one, so every rule holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeCatalog {
    groups: Vec<ApiGroup>,
}

/// A set of APIs granted together as one scope.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiGroup {
    pub key: String,
    pub label: String,
    pub description: String,
    // Defaulted so a group without APIs gets our message rather than serde's "missing field".
    #[serde(default)]
    pub apis: Vec<Api>,
}

/// One endpoint of the platform API, shown to users so they know what a scope grants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub method: String,
    pub path: String,
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read scope catalog file {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    // The TOML error carries the line, column and offending field, so it goes in the message.
    #[error("scope catalog is not valid: {0}")]
    Parse(toml::de::Error),
    #[error("scope catalog defines no groups; add at least one [[groups]] table")]
    Empty,
    #[error(
        "scope catalog defines {count} groups, but a Discord select menu holds at most {MAX_GROUPS}"
    )]
    TooManyGroups { count: usize },
    #[error("scope catalog uses group key {0:?} more than once; keys must be unique")]
    DuplicateKey(String),
    #[error("scope catalog group {group:?}: {problem}")]
    Invalid { group: String, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    // Defaulted so an empty file is reported as `Empty`, not as a missing field.
    #[serde(default)]
    groups: Vec<ApiGroup>,
}

impl ScopeCatalog {
    /// The catalog shipped with the bot, used when the operator configures none.
    pub fn builtin() -> ScopeCatalog {
        Self::from_toml(include_str!("catalog.toml"))
            .expect("the builtin catalog.toml is valid; a unit test parses it")
    }

    pub fn from_toml(text: &str) -> Result<ScopeCatalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(CatalogError::Parse)?;
        validate(&raw.groups)?;
        Ok(ScopeCatalog { groups: raw.groups })
    }

    pub fn load(path: &Path) -> Result<ScopeCatalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Groups in file order, which is the order the select menu shows them in.
    pub fn groups(&self) -> &[ApiGroup] {
        &self.groups
    }

    pub fn group(&self, key: &str) -> Option<&ApiGroup> {
        self.groups.iter().find(|group| group.key == key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.group(key).is_some()
    }
}

fn validate(groups: &[ApiGroup]) -> Result<(), CatalogError> {
    if groups.is_empty() {
        return Err(CatalogError::Empty);
    }
    if groups.len() > MAX_GROUPS {
        return Err(CatalogError::TooManyGroups {
            count: groups.len(),
        });
    }
    let mut seen = HashSet::new();
    for (index, group) in groups.iter().enumerate() {
        validate_group(index, group).map_err(|problem| CatalogError::Invalid {
            group: group.key.clone(),
            problem,
        })?;
        if !seen.insert(group.key.as_str()) {
            return Err(CatalogError::DuplicateKey(group.key.clone()));
        }
    }
    Ok(())
}

/// Returns the problem text; the caller attaches the group key.
fn validate_group(index: usize, group: &ApiGroup) -> Result<(), String> {
    check_key(index, &group.key)?;
    check_text("label", &group.label, MAX_OPTION_TEXT_CHARS)?;
    check_text("description", &group.description, MAX_OPTION_TEXT_CHARS)?;
    if group.apis.is_empty() {
        return Err("has no APIs; add at least one [[groups.apis]] table".to_owned());
    }
    let mut seen = HashSet::new();
    for (api_index, api) in group.apis.iter().enumerate() {
        let at = format!("apis[{api_index}]");
        check_api(&at, api)?;
        if !seen.insert((api.method.as_str(), api.path.as_str())) {
            return Err(format!(
                "{at} repeats {} {}, which the group already lists",
                api.method, api.path
            ));
        }
    }
    Ok(())
}

fn check_key(index: usize, key: &str) -> Result<(), String> {
    if key.is_empty() {
        // The key cannot identify this group, so point at its position instead.
        return Err(format!(
            "key is empty (groups[{index}]); use 1 to {MAX_KEY_CHARS} characters of a-z, 0-9 and _"
        ));
    }
    let len = key.chars().count();
    if len > MAX_KEY_CHARS {
        return Err(format!(
            "key is {len} characters long; at most {MAX_KEY_CHARS} are allowed"
        ));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "key contains {bad:?}; only lowercase a-z, digits 0-9 and _ are allowed"
        ));
    }
    Ok(())
}

/// Shared by label, description and summary: each is shown on a single line in Discord.
fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    let len = value.chars().count();
    if len > max_chars {
        return Err(format!(
            "{field} is {len} characters long; at most {max_chars} are allowed"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "{field} contains a line break or control character; it must be one line"
        ));
    }
    Ok(())
}

fn check_api(at: &str, api: &Api) -> Result<(), String> {
    if !METHODS.contains(&api.method.as_str()) {
        return Err(format!(
            "{at}.method {:?} is not one of {}",
            api.method,
            METHODS.join(", ")
        ));
    }
    if !api.path.starts_with('/') {
        return Err(format!("{at}.path {:?} must start with '/'", api.path));
    }
    if api
        .path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{at}.path {:?} contains whitespace or a control character",
            api.path
        ));
    }
    check_text(&format!("{at}.summary"), &api.summary, MAX_SUMMARY_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIRED_KEYS: [&str; 18] = [
        "centers",
        "services",
        "guests",
        "appointments",
        "bookings",
        "invoices",
        "payments",
        "memberships",
        "packages",
        "products",
        "gift_cards",
        "employees",
        "classes",
        "forms",
        "reports",
        "inventory",
        "webhooks",
        "messaging",
    ];

    fn group_toml(key: &str, label: &str, description: &str) -> String {
        format!(
            "[[groups]]\nkey = {key:?}\nlabel = {label:?}\ndescription = {description:?}\n\n\
             [[groups.apis]]\nmethod = \"GET\"\npath = \"/v1/{key}\"\nsummary = \"List them.\"\n\n"
        )
    }

    fn one_api(method: &str, path: &str, summary: &str) -> String {
        format!(
            "[[groups]]\nkey = \"things\"\nlabel = \"Things\"\ndescription = \"Things.\"\n\n\
             [[groups.apis]]\nmethod = {method:?}\npath = {path:?}\nsummary = {summary:?}\n"
        )
    }

    fn invalid(text: &str) -> (String, String, String) {
        match ScopeCatalog::from_toml(text) {
            Err(err @ CatalogError::Invalid { .. }) => {
                let message = err.to_string();
                let CatalogError::Invalid { group, problem } = err else {
                    unreachable!()
                };
                (group, problem, message)
            }
            other => panic!("expected CatalogError::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn builtin_parses_with_required_groups() {
        let catalog = ScopeCatalog::builtin();
        let groups = catalog.groups();
        assert!(groups.len() >= 18, "only {} groups", groups.len());
        assert!(groups.len() <= MAX_GROUPS);
        for key in REQUIRED_KEYS {
            assert!(catalog.contains(key), "builtin catalog lacks {key:?}");
        }
        for group in groups {
            assert!(
                (3..=8).contains(&group.apis.len()),
                "group {:?} has {} APIs",
                group.key,
                group.apis.len()
            );
        }
    }

    #[test]
    fn builtin_paths_are_versioned() {
        for group in ScopeCatalog::builtin().groups() {
            for api in &group.apis {
                assert!(api.path.starts_with("/v1/"), "{} {}", group.key, api.path);
            }
        }
    }

    #[test]
    fn lookup_by_key() {
        let catalog = ScopeCatalog::builtin();
        let group = catalog.group("appointments");
        assert_eq!(group.map(|g| g.label.as_str()), Some("Appointments"));
        assert!(catalog.group("Appointments").is_none());
        assert!(!catalog.contains("nope"));
        assert!(!catalog.contains(""));
    }

    #[test]
    fn minimal_catalog_keeps_file_order() {
        let text = group_toml("zeta", "Zeta", "Last letter.") + &group_toml("alpha", "Alpha", "A.");
        let catalog = ScopeCatalog::from_toml(&text).unwrap();
        let keys: Vec<&str> = catalog.groups().iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, ["zeta", "alpha"]);
        assert_eq!(
            catalog.groups()[0].apis,
            [Api {
                method: "GET".into(),
                path: "/v1/zeta".into(),
                summary: "List them.".into(),
            }]
        );
    }

    #[test]
    fn empty_file_is_rejected() {
        for text in ["", "# nothing here\n", "groups = []\n"] {
            let err = ScopeCatalog::from_toml(text).unwrap_err();
            assert!(matches!(err, CatalogError::Empty), "{text:?}: {err:?}");
            assert!(err.to_string().contains("no groups"), "{err}");
        }
    }

    #[test]
    fn too_many_groups_is_rejected() {
        let text: String = (0..26)
            .map(|i| group_toml(&format!("g{i}"), "G", "D"))
            .collect();
        let err = ScopeCatalog::from_toml(&text).unwrap_err();
        assert!(
            matches!(err, CatalogError::TooManyGroups { count: 26 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("26 groups"), "{err}");
        assert!(err.to_string().contains("at most 25"), "{err}");

        let text: String = (0..25)
            .map(|i| group_toml(&format!("g{i}"), "G", "D"))
            .collect();
        assert_eq!(ScopeCatalog::from_toml(&text).unwrap().groups().len(), 25);
    }

    #[test]
    fn duplicate_key_is_rejected() {
        let text = group_toml("guests", "Guests", "A.")
            + &group_toml("other", "Other", "B.")
            + &group_toml("guests", "Guests again", "C.");
        let err = ScopeCatalog::from_toml(&text).unwrap_err();
        assert!(
            matches!(&err, CatalogError::DuplicateKey(key) if key == "guests"),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"guests\""), "{err}");
    }

    #[test]
    fn bad_key_characters_are_rejected() {
        for (key, bad) in [
            ("Guests", "'G'"),
            ("gift-cards", "'-'"),
            ("gift cards", "' '"),
            ("café", "'é'"),
        ] {
            let (group, problem, message) = invalid(&group_toml(key, "L", "D"));
            assert_eq!(group, key);
            assert!(problem.contains(bad), "{key:?}: {problem}");
            assert!(message.contains(&format!("{key:?}")), "{message}");
        }
    }

    #[test]
    fn empty_and_long_keys_are_rejected() {
        let text = group_toml("fine", "F", "D") + &group_toml("", "Nameless", "D");
        let (group, problem, _) = invalid(&text);
        assert_eq!(group, "");
        assert!(problem.starts_with("key is empty"), "{problem}");
        assert!(problem.contains("groups[1]"), "{problem}");

        let (_, problem, _) = invalid(&group_toml(&"k".repeat(33), "L", "D"));
        assert!(problem.contains("33 characters"), "{problem}");
        assert!(ScopeCatalog::from_toml(&group_toml(&"k".repeat(32), "L", "D")).is_ok());
    }

    #[test]
    fn empty_or_long_label_is_rejected() {
        for label in ["", "   "] {
            let (group, problem, _) = invalid(&group_toml("guests", label, "D"));
            assert_eq!(group, "guests");
            assert_eq!(problem, "label is empty");
        }
        let (_, problem, message) = invalid(&group_toml("guests", &"é".repeat(101), "D"));
        assert_eq!(
            problem,
            "label is 101 characters long; at most 100 are allowed"
        );
        assert_eq!(
            message,
            "scope catalog group \"guests\": label is 101 characters long; at most 100 are allowed"
        );
        assert!(ScopeCatalog::from_toml(&group_toml("guests", &"é".repeat(100), "D")).is_ok());
    }

    #[test]
    fn empty_or_long_description_is_rejected() {
        let (_, problem, _) = invalid(&group_toml("guests", "Guests", ""));
        assert_eq!(problem, "description is empty");
        let (_, problem, _) = invalid(&group_toml("guests", "Guests", &"d".repeat(101)));
        assert!(
            problem.starts_with("description is 101 characters"),
            "{problem}"
        );
    }

    #[test]
    fn multi_line_text_is_rejected() {
        let (_, problem, _) = invalid(&group_toml("guests", "Guests", "two\nlines"));
        assert!(
            problem.starts_with("description contains a line break"),
            "{problem}"
        );
    }

    #[test]
    fn group_without_apis_is_rejected() {
        let missing = "[[groups]]\nkey = \"guests\"\nlabel = \"Guests\"\ndescription = \"D\"\n";
        let empty = format!("{missing}apis = []\n");
        for text in [missing.to_owned(), empty] {
            let (group, problem, _) = invalid(&text);
            assert_eq!(group, "guests");
            assert!(problem.starts_with("has no APIs"), "{problem}");
        }
    }

    #[test]
    fn bad_method_is_rejected() {
        for method in ["FETCH", "get", ""] {
            let (group, problem, _) = invalid(&one_api(method, "/v1/things", "S"));
            assert_eq!(group, "things");
            assert_eq!(
                problem,
                format!("apis[0].method {method:?} is not one of GET, POST, PUT, PATCH, DELETE")
            );
        }
        for method in METHODS {
            assert!(ScopeCatalog::from_toml(&one_api(method, "/v1/things", "S")).is_ok());
        }
    }

    #[test]
    fn bad_path_is_rejected() {
        for path in ["v1/things", "", "https://api.example.com/v1/things"] {
            let (_, problem, _) = invalid(&one_api("GET", path, "S"));
            assert_eq!(
                problem,
                format!("apis[0].path {path:?} must start with '/'")
            );
        }
        let (_, problem, _) = invalid(&one_api("GET", "/v1/some things", "S"));
        assert!(problem.contains("whitespace"), "{problem}");
    }

    #[test]
    fn bad_summary_is_rejected() {
        let (_, problem, _) = invalid(&one_api("GET", "/v1/things", ""));
        assert_eq!(problem, "apis[0].summary is empty");
        let (_, problem, _) = invalid(&one_api("GET", "/v1/things", &"s".repeat(101)));
        assert!(
            problem.starts_with("apis[0].summary is 101 characters"),
            "{problem}"
        );
    }

    #[test]
    fn repeated_api_is_rejected() {
        let text = one_api("GET", "/v1/things", "S")
            + "\n[[groups.apis]]\nmethod = \"GET\"\npath = \"/v1/things\"\nsummary = \"Again.\"\n";
        let (_, problem, _) = invalid(&text);
        assert!(
            problem.starts_with("apis[1] repeats GET /v1/things"),
            "{problem}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let typo_in_group = group_toml("guests", "Guests", "D").replace("label", "labl");
        let typo_in_api = one_api("GET", "/v1/things", "S").replace("summary", "sumary");
        let top_level = format!("version = 2\n{}", group_toml("guests", "Guests", "D"));
        for (text, field) in [
            (typo_in_group, "labl"),
            (typo_in_api, "sumary"),
            (top_level, "version"),
        ] {
            let err = ScopeCatalog::from_toml(&text).unwrap_err();
            assert!(matches!(err, CatalogError::Parse(_)), "{err:?}");
            let message = err.to_string();
            assert!(message.contains("unknown field"), "{message}");
            assert!(message.contains(field), "{message}");
        }
    }

    #[test]
    fn bad_toml_syntax_is_rejected() {
        let err = ScopeCatalog::from_toml("[[groups]\nkey = \"guests\"\n").unwrap_err();
        assert!(matches!(err, CatalogError::Parse(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("scope catalog is not valid"),
            "{err}"
        );
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn wrong_value_type_is_rejected() {
        let text = group_toml("guests", "Guests", "D").replace("key = \"guests\"", "key = 7");
        let err = ScopeCatalog::from_toml(&text).unwrap_err();
        assert!(matches!(err, CatalogError::Parse(_)), "{err:?}");
    }

    #[test]
    fn load_reads_a_file() {
        let path =
            std::env::temp_dir().join(format!("keygate-catalog-test-{}.toml", std::process::id()));
        std::fs::write(&path, group_toml("guests", "Guests", "D")).unwrap();
        let loaded = ScopeCatalog::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(loaded.unwrap().contains("guests"));
    }

    #[test]
    fn load_of_missing_file_names_the_path() {
        let path = Path::new("/nonexistent/keygate/scopes.toml");
        let err = ScopeCatalog::load(path).unwrap_err();
        let CatalogError::Io { path: got, source } = &err else {
            panic!("expected CatalogError::Io, got {err:?}");
        };
        assert_eq!(got, path);
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "cannot read scope catalog file /nonexistent/keygate/scopes.toml"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
