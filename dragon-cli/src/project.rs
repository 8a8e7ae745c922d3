//! `dragon createproject`: a new cargo project from `templates/project`, with a first model
//! (`task`) made by the model generator, ready to run and to test.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::fields;
use crate::generate::{self, ModelSpec};
use crate::names;
use crate::templates::render_dir;
use crate::write::{Owner, Plan};
use crate::{Broker, CliError, Db};

/// What `createproject` was asked for.
pub struct Options {
    pub name: String,
    pub db: Db,
    pub broker: Broker,
    /// The Dragon checkout to depend on by path (`None`: by version only).
    pub dragon_path: Option<PathBuf>,
    /// Where the project folder is made.
    pub parent: PathBuf,
}

/// The Dragon checkout this binary was built from, if it is still there.
pub fn own_checkout() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    dir.join("dragon-core/Cargo.toml")
        .is_file()
        .then(|| dir.canonicalize().ok())
        .flatten()
}

/// Writes the project; its folder.
pub fn create(options: &Options) -> Result<PathBuf, CliError> {
    let crate_name = names::project(&options.name)?;
    let root = options.parent.join(&options.name);
    if root.exists() {
        let empty = std::fs::read_dir(&root)
            .map_err(|e| CliError::io(&root, e))?
            .next()
            .is_none();
        if !empty || !root.is_dir() {
            return Err(CliError::Exists(root));
        }
    }
    let dragon_path = match &options.dragon_path {
        Some(p) => {
            let p = p.canonicalize().map_err(|e| CliError::io(p, e))?;
            if !p.join("dragon-core/Cargo.toml").is_file() {
                return Err(CliError::Usage(format!(
                    "--dragon-path {} is not a Dragon checkout (no dragon-core/Cargo.toml)",
                    p.display()
                )));
            }
            Some(p)
        }
        None => None,
    };
    let default_database_url = match options.db {
        Db::Sqlite => format!("sqlite://{crate_name}.sqlite"),
        Db::Postgres => format!("postgres://postgres@127.0.0.1:5432/{crate_name}"),
    };
    let ctx = json!({
        "name": options.name,
        "crate_name": crate_name,
        "db": options.db.as_str(),
        "broker": options.broker.as_str(),
        "dragon_version": env!("CARGO_PKG_VERSION"),
        "dragon_path": dragon_path.as_ref().map(|p| p.to_string_lossy().replace('\\', "/")),
        "default_database_url": default_database_url,
    });
    let mut plan = Plan::new(&root);
    for (rel, text) in render_dir("project", &ctx)? {
        plan.add(&rel, text, Owner::User, None);
    }
    let task = ModelSpec::new(
        "task",
        None,
        vec![
            fields::parse("title:string")?,
            fields::parse("done:bool")?,
            fields::parse("created_at:datetime")?,
        ],
    )?;
    generate::model(&mut plan, &root, &task, &generate::stamp())?;
    generate::registries(&mut plan, &root)?;
    // The versions Dragon was tested with: a project next to a checkout starts from its lock
    // file (cargo adds and drops what differs), so it builds what Dragon's CI built.
    if let Some(lock) = dragon_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p.join("Cargo.lock")).ok())
    {
        plan.add("Cargo.lock", lock, Owner::User, None);
    }
    plan.apply(false)?;
    Ok(root)
}
