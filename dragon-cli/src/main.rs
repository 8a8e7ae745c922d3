//! The `dragon` command: `createproject` writes a new Dragon app; `generate` adds models and
//! routers to one. Templates are built into the binary: nothing is fetched.

mod fields;
mod generate;
mod names;
mod project;
mod templates;
mod write;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// What a command can fail with; each is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Name(String),
    #[error("{} already exists and is not empty; choose another name or remove it", .0.display())]
    Exists(PathBuf),
    #[error("{} is not a Dragon project (no Cargo.toml with src/routers/ and migration/ here); run this in the project's folder or pass --project", .0.display())]
    NotAProject(PathBuf),
    #[error("would overwrite {}: not what this command writes (changed by you, or generated differently); pass --force to overwrite", .0.join(", "))]
    WouldOverwrite(Vec<String>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template error (a bug in dragon): {0}")]
    Template(String),
}

impl CliError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The database a new project is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Db {
    /// A SQLite file next to the app (nothing to install).
    Sqlite,
    /// PostgreSQL (DATABASE_URL=postgres://...).
    Postgres,
}

impl Db {
    fn as_str(self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
        }
    }
}

/// How nodes of a new project share changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Broker {
    /// One node, in memory.
    Memory,
    /// Several nodes through Redis (REDIS_URL); without REDIS_URL, in memory.
    Redis,
}

impl Broker {
    fn as_str(self) -> &'static str {
        match self {
            Broker::Memory => "memory",
            Broker::Redis => "redis",
        }
    }
}

/// Dragon: realtime web apps in Rust over one WebSocket.
#[derive(Parser, Debug)]
#[command(
    name = "dragon",
    version,
    about,
    after_help = "Examples:\n  dragon createproject shop\n  cd shop && cargo run                       # http://127.0.0.1:8000/\n  dragon generate model product name:string price:float note:text?\n  dragon generate router chat"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Writes a new Dragon app: a live page, a `task` model with its route, migrations, tests.
    #[command(
        after_help = "Examples:\n  dragon createproject shop\n  dragon createproject shop --db postgres --broker redis\n\nThe project depends on the Dragon checkout this command was built from (or --dragon-path), at exactly this command's version."
    )]
    Createproject {
        /// The project's name: a crate name (letters, digits, - and _).
        name: String,
        /// The database it is set up for.
        #[arg(long, value_enum, default_value = "sqlite")]
        db: Db,
        /// How several nodes share changes and presence.
        #[arg(long, value_enum, default_value = "memory")]
        broker: Broker,
        /// The Dragon checkout to depend on (default: the one this command was built from).
        #[arg(long, value_name = "PATH")]
        dragon_path: Option<PathBuf>,
    },
    /// Adds a model or a router to the project in this folder (or --project).
    #[command(subcommand)]
    Generate(Generate),
}

#[derive(Subcommand, Debug)]
enum Generate {
    /// A model: its entity, migration, route (filterable, orderable, validated) and a test.
    #[command(
        after_help = "Field types: string, text, int, bigint, float, bool, datetime, uuid, json; a trailing ? makes a field optional.\nA `created_at:datetime` field is set by the server. `bool` fields default to false.\n\nExamples:\n  dragon generate model note title:string body:text? pinned:bool created_at:datetime\n  dragon generate model order_line qty:int price:float --route order-lines"
    )]
    Model {
        /// The model's name, snake_case (`order_line`).
        name: String,
        /// Its fields, `name:type` or `name:type?`.
        #[arg(value_name = "FIELD")]
        fields: Vec<String>,
        /// The route it is served on (default: the name with - for _).
        #[arg(long)]
        route: Option<String>,
        #[command(flatten)]
        common: GenerateOptions,
    },
    /// A router with verbs of your own (`hello`, `subscribe`, `shout` to start from) and a test.
    #[command(after_help = "Example:\n  dragon generate router chat")]
    Router {
        /// The router's name, snake_case.
        name: String,
        /// The route it is served on (default: the name with - for _).
        #[arg(long)]
        route: Option<String>,
        #[command(flatten)]
        common: GenerateOptions,
    },
}

#[derive(clap::Args, Debug)]
struct GenerateOptions {
    /// Overwrite files changed since they were generated.
    #[arg(long)]
    force: bool,
    /// The project's folder.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Createproject {
            name,
            db,
            broker,
            dragon_path,
        } => {
            let dragon_path = dragon_path.or_else(project::own_checkout);
            let from = dragon_path.as_ref().map(|p| p.display().to_string());
            let parent = std::env::current_dir().map_err(|e| CliError::io(Path::new("."), e))?;
            let root = project::create(&project::Options {
                name: name.clone(),
                db,
                broker,
                dragon_path,
                parent,
            })?;
            println!(
                "Created {} (Dragon {}{}).",
                root.display(),
                env!("CARGO_PKG_VERSION"),
                from.map_or_else(|| ", by version".to_owned(), |p| format!(" from {p}"))
            );
            println!(
                "Next:\n  cd {name}\n  cargo run        # then open http://127.0.0.1:8000/ in two tabs\n  cargo test"
            );
            Ok(())
        }
        Command::Generate(g) => generate(g),
    }
}

fn generate(g: Generate) -> Result<(), CliError> {
    let (common, what) = match &g {
        Generate::Model { common, name, .. } => (common, format!("model {name}")),
        Generate::Router { common, name, .. } => (common, format!("router {name}")),
    };
    let root = &common.project;
    let is_project = root.join("Cargo.toml").is_file()
        && root.join("src/routers").is_dir()
        && root.join("migration/src").is_dir();
    if !is_project {
        return Err(CliError::NotAProject(root.clone()));
    }
    let mut plan = write::Plan::new(root);
    match &g {
        Generate::Model {
            name,
            fields,
            route,
            ..
        } => {
            let fields = fields
                .iter()
                .map(|f| fields::parse(f))
                .collect::<Result<Vec<_>, _>>()?;
            let spec = generate::ModelSpec::new(name, route.as_deref(), fields)?;
            generate::model(&mut plan, root, &spec, &generate::stamp())?;
        }
        Generate::Router { name, route, .. } => {
            generate::router(&mut plan, name, route.as_deref())?;
        }
    }
    generate::registries(&mut plan, root)?;
    let outcome = plan.apply(common.force)?;
    if outcome.written.is_empty() {
        println!("{what}: nothing to do, every file is up to date.");
    } else {
        println!("{what}: wrote {}.", outcome.written.join(", "));
    }
    Ok(())
}
