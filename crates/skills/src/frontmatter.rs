//! SKILL.md: YAML frontmatter between `---` lines, then a Markdown body (the Agent Skills format).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::LoadError;

/// Longest skill name (Agent Skills spec).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest description (Agent Skills spec).
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest compatibility note (Agent Skills spec).
pub const MAX_COMPATIBILITY_CHARS: usize = 500;
/// Largest frontmatter block read; a description is at most 1 KiB, so this is generous.
pub const MAX_FRONTMATTER_BYTES: usize = 64 * 1024;

/// The fields the Agent Skills specification defines.
const SPEC_FIELDS: [&str; 6] = [
    "name",
    "description",
    "license",
    "compatibility",
    "metadata",
    "allowed-tools",
];

/// The frontmatter of a SKILL.md, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontmatter {
    /// The skill's name; equal to its folder's name.
    pub name: String,
    /// What the skill does and when to use it.
    pub description: String,
    /// A license name or a bundled license file.
    pub license: Option<String>,
    /// Environment requirements, in prose.
    pub compatibility: Option<String>,
    /// Free key/value pairs (scalars written as numbers or booleans are kept as their text, as
    /// written: `version: 1.10` is "1.10").
    pub metadata: BTreeMap<String, String>,
    /// Pre-approved tools (`allowed-tools`, experimental in the spec). Advisory in nanoclaw:
    /// what a skill may do is what skill.toml grants.
    pub allowed_tools: Vec<String>,
    /// Top-level fields the spec does not define (other clients' extensions), in order of name.
    /// They are ignored, not errors: see [`parse`].
    pub unknown_fields: Vec<String>,
}

/// Checks a skill name against the spec's rules; `Err` is the message after the field name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty; use lowercase letters, digits and hyphens".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "{name:?} is {} characters; the limit is {MAX_NAME_CHARS}, shorten it",
            name.chars().count()
        ));
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Err(format!(
            "{name:?} must be lowercase: use {:?} (and name the folder the same)",
            name.to_lowercase()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; only lowercase letters a-z, digits 0-9 and single hyphens \
             are allowed"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "{name:?} must not start or end with a hyphen; remove it"
        ));
    }
    if name.contains("--") {
        return Err(format!(
            "{name:?} must not contain consecutive hyphens (\"--\"); use a single hyphen"
        ));
    }
    Ok(())
}

/// Splits SKILL.md into its frontmatter text and body. The frontmatter is the text between a
/// first line `---` and the next line `---` (a UTF-8 byte-order mark before it is skipped).
fn split(text: &str, file: &Path) -> Result<(String, String), LoadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let syntax = |message: &str| LoadError::Syntax {
        file: file.to_path_buf(),
        message: message.to_string(),
    };
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end_matches(['\r', '\n']).trim_end() != "---" {
        return Err(syntax(
            "must start with YAML frontmatter: a line \"---\", the fields (name, description, …), \
             then a line \"---\"",
        ));
    }
    let mut yaml = String::new();
    let mut consumed = first.len();
    for line in lines {
        consumed += line.len();
        if line.trim_end_matches(['\r', '\n']).trim_end() == "---" {
            return Ok((yaml, text[consumed..].to_string()));
        }
        yaml.push_str(line);
        if yaml.len() > MAX_FRONTMATTER_BYTES {
            return Err(syntax(&format!(
                "the frontmatter is longer than {MAX_FRONTMATTER_BYTES} bytes; move long text \
                 into the body or references/"
            )));
        }
    }
    Err(syntax(
        "the frontmatter is not closed: add a line \"---\" after the last field",
    ))
}

fn string_field(
    map: &serde_json::Map<String, Value>,
    field: &str,
    file: &Path,
) -> Result<Option<String>, LoadError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(LoadError::invalid(
            file,
            field,
            format!("{field} must be a string, not {}; quote it", kind_of(other)),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Frontmatter is a handful of short fields: budgets far below the parser's defaults stop alias
/// bombs ("billion laughs") and deep nesting early. Duplicate keys are errors.
fn yaml_options() -> serde_saphyr::Options {
    let mut aliases = serde_saphyr::options::AliasLimits::default();
    aliases.max_total_replayed_events = 10_000;
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 50_000,
            max_nodes: 10_000,
            max_depth: 16,
            max_aliases: 1_000,
            max_documents: 1,
        },
        alias_limits: aliases,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        // `.nan` and `.inf` become nulls here and are then read as their text (see
        // `scalars_as_text`), not refused.
        non_finite_float_policy: serde_saphyr::options::NonFiniteFloatPolicy::PassThrough,
    }
}

/// Top-level fields whose value is text: a plain scalar there is read as written.
const TEXT_FIELDS: [&str; 4] = ["name", "description", "license", "compatibility"];

/// Which scalars to read a second time as their text: top-level fields and `metadata` keys.
struct TextSeed {
    top: Vec<String>,
    meta: Vec<String>,
}

/// The texts read by [`TextSeed`]; `None` is a YAML null (`~`, `null`, nothing).
#[derive(Default)]
struct Texts {
    top: BTreeMap<String, Option<String>>,
    meta: BTreeMap<String, Option<String>>,
}

struct MetaSeed<'a>(&'a [String], &'a mut BTreeMap<String, Option<String>>);

impl<'de> serde::de::DeserializeSeed<'de> for TextSeed {
    type Value = Texts;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Texts, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TextSeed {
    type Value = Texts;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping of fields")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Texts, A::Error> {
        let mut texts = Texts::default();
        while let Some(key) = map.next_key::<String>()? {
            if self.top.contains(&key) {
                let text = map.next_value::<Option<String>>()?;
                texts.top.insert(key, text);
            } else if key == "metadata" && !self.meta.is_empty() {
                map.next_value_seed(MetaSeed(&self.meta, &mut texts.meta))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(texts)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for MetaSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MetaSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping of strings to strings")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if self.0.contains(&key) {
                let text = map.next_value::<Option<String>>()?;
                self.1.insert(key, text);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Whether a value from the typed reading is a scalar that is not a string (a number, a
/// boolean, or a null, which is also what `.nan` and `.inf` become).
fn typed_scalar(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(_) | Value::Number(_))
}

/// Replaces the text fields and metadata values that YAML typed as numbers or booleans with
/// the text as written (`version: 1.10` is "1.10", not 1.1; `name: 2048` is the skill "2048"),
/// as the reference validator (which reads every scalar as a string) does. A null stays a null.
fn scalars_as_text(
    yaml: &str,
    map: &mut serde_json::Map<String, Value>,
    file: &Path,
) -> Result<(), LoadError> {
    let top: Vec<String> = TEXT_FIELDS
        .iter()
        .filter(|f| map.get(**f).is_some_and(typed_scalar))
        .map(|f| f.to_string())
        .collect();
    let meta: Vec<String> = match map.get("metadata") {
        Some(Value::Object(m)) => m
            .iter()
            .filter(|(_, v)| typed_scalar(v))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    };
    if top.is_empty() && meta.is_empty() {
        return Ok(());
    }
    let texts = serde_saphyr::with_deserializer_from_str_with_options(yaml, yaml_options(), |d| {
        serde::de::DeserializeSeed::deserialize(TextSeed { top, meta }, d)
    })
    .map_err(|e| LoadError::Syntax {
        file: file.to_path_buf(),
        message: format!("the frontmatter is not valid YAML: {e}"),
    })?;
    for (k, text) in texts.top {
        map.insert(k, text.map_or(Value::Null, Value::String));
    }
    if let Some(Value::Object(m)) = map.get_mut("metadata") {
        for (k, text) in texts.meta {
            // An empty value (`author:`) is empty text, as in the reference validator.
            m.insert(k, Value::String(text.unwrap_or_default()));
        }
    }
    Ok(())
}

/// Parses and validates SKILL.md text. `folder` is the skill folder's name, which `name` must
/// equal; `None` skips that check (an install reads the name before the folder is named).
///
/// Fields the spec does not define are listed in [`Frontmatter::unknown_fields`], not refused:
/// the specification defines six fields and reserves `metadata` for extensions but does not
/// say that a reader must reject others, and published skills carry their clients' extensions
/// (`argument-hint`, `disable-model-invocation`, …). nanoclaw gives them no meaning, so
/// ignoring them grants nothing; what a skill may do is only what skill.toml says.
pub fn parse(
    text: &str,
    file: &Path,
    folder: Option<&str>,
) -> Result<(Frontmatter, String), LoadError> {
    let (yaml, body) = split(text, file)?;
    let value: Value = serde_saphyr::from_str_with_options(&yaml, yaml_options()).map_err(|e| {
        LoadError::Syntax {
            file: file.to_path_buf(),
            message: format!("the frontmatter is not valid YAML: {e}"),
        }
    })?;
    let mut map = match value {
        Value::Object(map) => map,
        Value::Null => {
            return Err(LoadError::invalid(
                file,
                "name",
                "the frontmatter is empty; add \"name: <folder name>\" and \"description: …\"",
            ));
        }
        other => {
            return Err(LoadError::Syntax {
                file: file.to_path_buf(),
                message: format!(
                    "the frontmatter must be a mapping of fields, not {}",
                    kind_of(&other)
                ),
            });
        }
    };

    scalars_as_text(&yaml, &mut map, file)?;

    let name = string_field(&map, "name", file)?.ok_or_else(|| {
        LoadError::invalid(
            file,
            "name",
            format!(
                "name is missing; add \"name: {}\" to the frontmatter",
                folder.unwrap_or("<folder name>")
            ),
        )
    })?;
    check_name(&name).map_err(|m| LoadError::invalid(file, "name", format!("name {m}")))?;
    if let Some(folder) = folder
        && folder != name
    {
        return Err(LoadError::invalid(
            file,
            "name",
            format!(
                "name {name:?} must equal the folder name {folder:?}; rename the folder or the name"
            ),
        ));
    }

    let description = string_field(&map, "description", file)?.ok_or_else(|| {
        LoadError::invalid(
            file,
            "description",
            "description is missing; add \"description: <what the skill does and when to use it>\"",
        )
    })?;
    if description.trim().is_empty() {
        return Err(LoadError::invalid(
            file,
            "description",
            "description is empty; say what the skill does and when to use it",
        ));
    }
    let n = description.chars().count();
    if n > MAX_DESCRIPTION_CHARS {
        return Err(LoadError::invalid(
            file,
            "description",
            format!(
                "description is {n} characters; the limit is {MAX_DESCRIPTION_CHARS}, move detail \
                 into the body"
            ),
        ));
    }

    let license = string_field(&map, "license", file)?;
    let compatibility = string_field(&map, "compatibility", file)?;
    if let Some(c) = &compatibility {
        let n = c.chars().count();
        if c.trim().is_empty() || n > MAX_COMPATIBILITY_CHARS {
            return Err(LoadError::invalid(
                file,
                "compatibility",
                format!(
                    "compatibility must be 1-{MAX_COMPATIBILITY_CHARS} characters (it is {n}); \
                     shorten it or leave the field out"
                ),
            ));
        }
    }

    let mut metadata = BTreeMap::new();
    match map.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                // Numbers, booleans and nulls were read as their text above.
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => {
                        return Err(LoadError::invalid(
                            file,
                            format!("metadata.{k}"),
                            format!(
                                "metadata.{k} must be a string, not {}; metadata maps strings to \
                                 strings (write a list as \"a, b\")",
                                kind_of(other)
                            ),
                        ));
                    }
                };
                metadata.insert(k.clone(), text);
            }
        }
        Some(other) => {
            return Err(LoadError::invalid(
                file,
                "metadata",
                format!(
                    "metadata must be a mapping of strings to strings, not {}",
                    kind_of(other)
                ),
            ));
        }
    }

    let allowed_tools = match map.get("allowed-tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(other) => {
            return Err(LoadError::invalid(
                file,
                "allowed-tools",
                format!(
                    "allowed-tools must be a space-delimited string (\"Read Bash(git:*)\"), not {}",
                    kind_of(other)
                ),
            ));
        }
    };

    let unknown_fields = map
        .keys()
        .filter(|k| !SPEC_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();

    Ok((
        Frontmatter {
            name,
            description,
            license,
            compatibility,
            metadata,
            allowed_tools,
            unknown_fields,
        },
        body,
    ))
}
