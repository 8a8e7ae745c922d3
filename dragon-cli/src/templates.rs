//! The templates of `templates/`, embedded in the binary (no network, no files needed at run
//! time), rendered with minijinja.
//!
//! A file whose name ends in `.j2` is rendered (and the suffix dropped); any other file is
//! copied as it is. `gitignore` and `env.example` become `.gitignore` and `.env.example`.

use include_dir::{Dir, DirEntry, include_dir};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Value};
use serde::Serialize;

use crate::CliError;

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../templates");

/// The renderer: blocks take their own line away, files keep their last newline.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .expect("a valid syntax");
    env.set_syntax(syntax);
    env
}

/// Renders one template's text.
pub fn render_str(name: &str, source: &str, ctx: &impl Serialize) -> Result<String, CliError> {
    environment()
        .render_str(source, Value::from(Serde(ctx)))
        .map_err(|e| CliError::Template(format!("{name}: {e}")))
}

/// Renders the template at `path` (under `templates/`).
pub fn render(path: &str, ctx: &impl Serialize) -> Result<String, CliError> {
    let file = TEMPLATES
        .get_file(path)
        .ok_or_else(|| CliError::Template(format!("no template {path}")))?;
    let source = file
        .contents_utf8()
        .ok_or_else(|| CliError::Template(format!("{path} is not text")))?;
    render_str(path, source, ctx)
}

/// Every file under `dir` (e.g. `project`): its path relative to `dir` as written out,
/// and its contents rendered.
pub fn render_dir(dir: &str, ctx: &impl Serialize) -> Result<Vec<(String, String)>, CliError> {
    let root = TEMPLATES
        .get_dir(dir)
        .ok_or_else(|| CliError::Template(format!("no template folder {dir}")))?;
    let mut out = Vec::new();
    collect(root, dir, ctx, &mut out)?;
    out.sort();
    Ok(out)
}

fn collect(
    d: &Dir<'static>,
    base: &str,
    ctx: &impl Serialize,
    out: &mut Vec<(String, String)>,
) -> Result<(), CliError> {
    for entry in d.entries() {
        match entry {
            DirEntry::Dir(sub) => collect(sub, base, ctx, out)?,
            DirEntry::File(f) => {
                let path = f.path().to_string_lossy().replace('\\', "/");
                let rel = path
                    .strip_prefix(base)
                    .map(|p| p.trim_start_matches('/'))
                    .unwrap_or(&path)
                    .to_owned();
                let text = f
                    .contents_utf8()
                    .ok_or_else(|| CliError::Template(format!("{path} is not text")))?;
                let (rel, text) = match rel.strip_suffix(".j2") {
                    Some(stripped) => (stripped.to_owned(), render_str(&path, text, ctx)?),
                    None => (rel, text.to_owned()),
                };
                out.push((dotted(&rel), text));
            }
        }
    }
    Ok(())
}

/// `gitignore` -> `.gitignore`, `env.example` -> `.env.example` (dot files are easy to lose
/// when templates are packaged).
fn dotted(rel: &str) -> String {
    match rel {
        "gitignore" | "env.example" => format!(".{rel}"),
        other => other.to_owned(),
    }
}
