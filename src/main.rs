//! The command line: parses arguments, runs one command, prints what went wrong and maps it to an exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use imagectl::diagnostics::InvalidManifests;
use imagectl::graph::DependencyGraph;
use imagectl::manifest::raw;

/// Exit codes that scripts rely on (see the README).
mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    /// `plan --detailed-exitcode` only: the plan has changes.
    #[allow(dead_code)]
    pub const CHANGES: u8 = 2;
}

#[derive(Parser, Debug)]
#[command(name = "imagectl", version, about = "Declarative reconciler for private machine images on AWS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check manifests without contacting AWS.
    Validate {
        /// Manifest files or directories (searched recursively for *.yaml and *.yml).
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the manifest language.
    Schema,
    /// Print the dependency graph of the stack.
    Graph {
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1, not clap's 2: 2 means "changes" to scripts that use --detailed-exitcode.
            return ExitCode::from(if e.use_stderr() { exit::ERROR } else { exit::OK });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            report(&error);
            ExitCode::from(exit::ERROR)
        }
    }
}

/// Prints an error: manifest problems one per line, anything else as its cause chain.
fn report(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    if let Some(invalid) = error.downcast_ref::<InvalidManifests>() {
        for diagnostic in &invalid.diagnostics {
            let _ = writeln!(stderr, "{diagnostic}");
        }
        let _ = writeln!(stderr, "{invalid}");
        return;
    }
    let _ = writeln!(stderr, "error: {error}");
    for cause in error.chain().skip(1) {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate { paths } => validate(&paths),
        Command::Schema => {
            println!("{}", schema_json());
            Ok(exit::OK)
        }
        Command::Graph { paths, format } => graph(&paths, format),
    }
}

fn validate(paths: &[PathBuf]) -> Result<u8> {
    let validated = imagectl::load_stack(paths)?;
    for warning in &validated.warnings {
        eprintln!("{warning}");
    }
    let model = &validated.model;
    let warnings = match validated.warnings.len() {
        0 => String::new(),
        1 => ", 1 warning".to_owned(),
        n => format!(", {n} warnings"),
    };
    println!("Stack {} is valid: {} resources{warnings}.", model.stack.name, model.resources.len());
    Ok(exit::OK)
}

fn schema_json() -> String {
    let schema = schemars::schema_for!(raw::Manifest);
    serde_json::to_string_pretty(&schema).expect("a schema serializes")
}

fn graph(paths: &[PathBuf], format: GraphFormat) -> Result<u8> {
    let validated = imagectl::load_stack(paths)?;
    let graph = DependencyGraph::build(&validated.model);
    match format {
        GraphFormat::Dot => print!("{}", graph.to_dot()),
        GraphFormat::Text => {
            let order = graph.order().expect("validation rejects cycles");
            for (i, id) in order.iter().enumerate() {
                let needs: Vec<String> = graph.dependencies(id).iter().map(ToString::to_string).collect();
                if needs.is_empty() {
                    println!("{:>3}. {id}", i + 1);
                } else {
                    println!("{:>3}. {id}  (needs {})", i + 1, needs.join(", "));
                }
            }
        }
    }
    Ok(exit::OK)
}
