//! Writing a project's files safely: everything is checked before anything is written, a file
//! the user may have changed is never overwritten without `--force`, and writing the same
//! thing twice changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::CliError;

/// Who owns a file once it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The user: written once; a different file already there is refused without `--force`.
    User,
    /// The generator (the lists it keeps): rewritten freely, unless the file on disk is
    /// neither what the generator wrote last (`previous`) nor what it writes now.
    Generator,
}

struct Planned {
    rel: String,
    text: String,
    owner: Owner,
    previous: Option<String>,
}

/// The files a command will write under `root`.
pub struct Plan {
    root: PathBuf,
    files: Vec<Planned>,
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Plan {
    pub fn new(root: &Path) -> Plan {
        Plan {
            root: root.to_owned(),
            files: Vec::new(),
        }
    }

    /// Adds a file (Rust sources are formatted with rustfmt first).
    pub fn add(&mut self, rel: &str, text: String, owner: Owner, previous: Option<String>) {
        let text = if rel.ends_with(".rs") {
            rustfmt(&text)
        } else {
            text
        };
        let previous = previous.map(|p| if rel.ends_with(".rs") { rustfmt(&p) } else { p });
        self.files.retain(|f| f.rel != rel);
        self.files.push(Planned {
            rel: rel.to_owned(),
            text,
            owner,
            previous,
        });
    }

    /// The paths planned so far.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.rel.as_str())
    }

    /// Writes every file, or none if one would overwrite a change of the user's.
    pub fn apply(self, force: bool) -> Result<Outcome, CliError> {
        let mut refused = Vec::new();
        let mut out = Outcome::default();
        let mut to_write = Vec::new();
        for f in &self.files {
            let path = self.root.join(&f.rel);
            match std::fs::read_to_string(&path) {
                Ok(existing) if existing == f.text => out.unchanged.push(f.rel.clone()),
                Ok(existing) => {
                    let ours = f.owner == Owner::Generator
                        && f.previous.as_deref() == Some(existing.as_str());
                    if ours || force {
                        to_write.push(f);
                    } else {
                        refused.push(f.rel.clone());
                    }
                }
                Err(_) => to_write.push(f),
            }
        }
        if !refused.is_empty() {
            return Err(CliError::WouldOverwrite(refused));
        }
        for f in to_write {
            let path = self.root.join(&f.rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
            }
            std::fs::write(&path, &f.text).map_err(|e| CliError::io(&path, e))?;
            out.written.push(f.rel.clone());
        }
        Ok(out)
    }
}

/// `text` formatted as rustfmt would (edition 2024); unchanged if rustfmt is not there or
/// refuses it (the compiler will say why).
fn rustfmt(text: &str) -> String {
    use std::io::Write;
    let child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return text.to_owned();
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => {
            String::from_utf8(out.stdout).unwrap_or_else(|_| text.to_owned())
        }
        _ => text.to_owned(),
    }
}
