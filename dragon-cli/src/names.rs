//! Names the user gives: projects, models, routes, fields. Refused early, with the reason.

use crate::CliError;

/// Rust keywords (2024 edition, strict and reserved) and names that would shadow crates.
const RESERVED: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
];

/// Crate names a project may not take (they would clash with its dependencies or std).
const TAKEN_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "test",
    "proc_macro",
    "migration",
    "dragon_core",
    "dragon_derive",
    "sea_orm",
    "axum",
    "tokio",
    "serde",
    "serde_json",
    "tracing",
    "dotenvy",
];

/// A project name: a valid crate name (`my-app`, `my_app`), not a keyword or a dependency.
pub fn project(name: &str) -> Result<String, CliError> {
    let ok = name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(CliError::Name(format!(
            "{name:?} is not a valid crate name: use letters, digits, - and _, starting with a letter"
        )));
    }
    let crate_name = name.replace('-', "_");
    if RESERVED.contains(&crate_name.as_str()) || TAKEN_CRATES.contains(&crate_name.as_str()) {
        return Err(CliError::Name(format!(
            "{name:?} cannot be a project name: it is a Rust keyword or the name of a crate it uses"
        )));
    }
    Ok(crate_name)
}

/// A Rust identifier in snake case (`todo_item`): models and fields.
pub fn ident(what: &str, name: &str) -> Result<(), CliError> {
    let ok = name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(CliError::Name(format!(
            "{what} {name:?} must be snake_case: lower-case letters, digits and _, starting with a letter"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(CliError::Name(format!(
            "{what} {name:?} is a Rust keyword; choose another name"
        )));
    }
    Ok(())
}

/// A route name (`todo-item`): lower-case letters, digits, `-` and `_`.
pub fn route(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "dragon"
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CliError::Name(format!(
            "route {name:?} must be lower-case letters, digits, - and _ (and not `dragon`)"
        )))
    }
}

/// `todo_item` -> `todo-item`, the default route of a model.
pub fn kebab(snake: &str) -> String {
    snake.replace('_', "-")
}

/// `todo_item` -> `TodoItem`.
pub fn camel(snake: &str) -> String {
    snake
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names() {
        assert_eq!(project("my-app").unwrap(), "my_app");
        for bad in [
            "1app",
            "my app",
            "",
            "self",
            "test",
            "dragon-core",
            "a/b",
            "ünï",
        ] {
            assert!(project(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers_and_routes() {
        ident("model", "todo_item").unwrap();
        for bad in ["TodoItem", "_x", "type", "a-b", ""] {
            assert!(ident("model", bad).is_err(), "{bad}");
        }
        route("todo-item").unwrap();
        assert!(route("dragon").is_err());
        assert_eq!(camel("todo_item"), "TodoItem");
        assert_eq!(kebab("todo_item"), "todo-item");
    }
}
