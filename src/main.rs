//! The command line: parses arguments, runs one command, prints what went wrong and maps it to an exit code.

mod commands;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use imagectl::diagnostics::InvalidManifests;
use imagectl::graph::DependencyGraph;
use imagectl::manifest::raw;
use imagectl::plan::PlanError;

/// Exit codes that scripts rely on (see the README).
mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    /// `plan --detailed-exitcode` only: the plan has changes.
    pub const CHANGES: u8 = 2;
}

#[derive(Parser, Debug)]
#[command(name = "imagectl", version, about = "Declarative reconciler for private machine images on AWS")]
struct Cli {
    #[command(flatten)]
    aws: AwsArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where to connect, on top of the SDK's standard configuration (environment, profiles, SSO, web identity).
#[derive(Args, Debug, Clone)]
struct AwsArgs {
    /// AWS region (default: AWS_REGION or the profile's region).
    #[arg(long, global = true)]
    region: Option<String>,
    /// Named profile from the AWS config files.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Endpoint URL for every AWS service (default: AWS_ENDPOINT_URL).
    #[arg(long, global = true)]
    endpoint_url: Option<String>,
}

/// Options shared by plan, apply and destroy.
#[derive(Args, Debug, Clone)]
struct ScopeArgs {
    /// Manifest files or directories.
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Only this resource and what it depends on (KIND/NAME; repeatable).
    #[arg(long = "target", value_name = "KIND/NAME", value_parser = imagectl::model::ResourceId::parse)]
    targets: Vec<imagectl::model::ResourceId>,
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
    /// Read live AWS state and show what apply would change.
    Plan {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Also delete resources the stack owns that are no longer in the manifests.
        #[arg(long)]
        prune: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Save the plan to FILE for `apply --plan FILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make AWS match the manifests (or carry out a saved plan).
    Apply {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        prune: bool,
        /// Apply this saved plan, refused if the manifests or the live state changed since it was made.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["prune", "targets", "paths"])]
        plan: Option<PathBuf>,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        auto_approve: bool,
        /// Start image builds and return; a later apply (or the scheduled job) finishes them, `status` follows them.
        #[arg(long, conflicts_with = "plan")]
        no_wait: bool,
        /// How many resources to change at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallelism: u16,
    },
    /// Show each image's current AMI and the state of its latest build (Building, Scanning, Successful, Issues
    /// Found, Investigating).
    Status {
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Print the AMI IDs each image delivers, per region (its own and its copies), for scripts.
    Outputs {
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Delete everything the stack owns, in reverse dependency order.
    Destroy {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        auto_approve: bool,
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallelism: u16,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
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
    if let Some(refused) = error.downcast_ref::<PlanError>() {
        for diagnostic in &refused.diagnostics {
            let _ = writeln!(stderr, "{diagnostic}");
        }
        let _ = writeln!(stderr, "{refused}");
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
        Command::Plan { scope, prune, output, out, detailed_exitcode } => {
            let request = commands::PlanRequest {
                paths: scope.paths,
                options: commands::options(imagectl::plan::Mode::Apply, prune, scope.targets, false),
            };
            commands::runtime()?.block_on(commands::plan(
                &cli.aws.into(),
                request,
                output == OutputFormat::Json,
                out,
                detailed_exitcode,
            ))
        }
        Command::Apply { scope, prune, plan, auto_approve, parallelism, no_wait } => {
            let source = match plan {
                Some(file) => commands::PlanSource::Saved(file),
                None => commands::PlanSource::Fresh(commands::PlanRequest {
                    paths: scope.paths,
                    options: commands::options(imagectl::plan::Mode::Apply, prune, scope.targets, no_wait),
                }),
            };
            commands::runtime()?.block_on(commands::apply(&cli.aws.into(), source, auto_approve, parallelism.into()))
        }
        Command::Status { paths, output } => {
            commands::runtime()?.block_on(commands::status(&cli.aws.into(), &paths, output == OutputFormat::Json))
        }
        Command::Outputs { paths, output } => {
            commands::runtime()?.block_on(commands::outputs(&cli.aws.into(), &paths, output == OutputFormat::Json))
        }
        Command::Destroy { scope, auto_approve, parallelism } => {
            let source = commands::PlanSource::Fresh(commands::PlanRequest {
                paths: scope.paths,
                options: commands::options(imagectl::plan::Mode::Destroy, false, scope.targets, false),
            });
            commands::runtime()?.block_on(commands::apply(&cli.aws.into(), source, auto_approve, parallelism.into()))
        }
    }
}

impl From<AwsArgs> for imagectl::aws::ConnectOptions {
    fn from(args: AwsArgs) -> Self {
        imagectl::aws::ConnectOptions { region: args.region, profile: args.profile, endpoint_url: args.endpoint_url }
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
