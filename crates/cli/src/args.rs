//! The command line: every subcommand and its arguments, as `clap` derives them. No behaviour lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "specfaas",
    version,
    about = "A serverless platform that runs multi-function applications speculatively"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--sandbox`: whether functions are confined.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum SandboxMode {
    Enforce,
    Off,
}

impl From<SandboxMode> for runtime::sandbox::Mode {
    fn from(m: SandboxMode) -> Self {
        match m {
            SandboxMode::Enforce => runtime::sandbox::Mode::Enforce,
            SandboxMode::Off => runtime::sandbox::Mode::Off,
        }
    }
}

/// `bench ablation --piece`: what one side runs without.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum AblationPiece {
    Paths,
    IdleCpu,
    Reuse,
    Fields,
}

impl From<AblationPiece> for bench::ablation::Piece {
    fn from(p: AblationPiece) -> Self {
        match p {
            AblationPiece::Paths => bench::ablation::Piece::Paths,
            AblationPiece::IdleCpu => bench::ablation::Piece::IdleCpu,
            AblationPiece::Reuse => bench::ablation::Piece::Reuse,
            AblationPiece::Fields => bench::ablation::Piece::Fields,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Deploy the project in DIR and run one invocation of APP (an application or a function) on the embedded store.
    Run {
        /// Project directory containing specfaas.toml.
        dir: PathBuf,
        /// Application (or function) to invoke.
        app: String,
        /// Input, a JSON object.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Where the embedded store lives [default: DIR/.specfaas].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print only the result, not the activation records.
        #[arg(long)]
        result: bool,
        /// Platform limits, a TOML file (see README, "Limits"); defaults apply to anything it leaves out.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run this invocation non-speculatively.
        #[arg(long)]
        no_speculation: bool,
        /// Confine functions (`enforce`, the default on Linux) or not (`off`) [default: the config's [sandbox] mode].
        #[arg(long, env = "SPECFAAS_SANDBOX")]
        sandbox: Option<SandboxMode>,
    },
    /// Run the platform behind an HTTP API compatible with Apache OpenWhisk.
    Serve {
        /// Address to listen on [default: the config's [server] listen, else 127.0.0.1:3233].
        #[arg(long, env = "SPECFAAS_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Where the embedded store, and the first key (`auth`), live [default: the config's [server] data_dir,
        /// else .specfaas].
        #[arg(long, env = "SPECFAAS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Platform limits, a TOML file (see README, "Limits").
        #[arg(long, env = "SPECFAAS_CONFIG")]
        config: Option<PathBuf>,
        /// Confine functions (`enforce`, the default on Linux) or not (`off`) [default: the config's [sandbox] mode].
        #[arg(long, env = "SPECFAAS_SANDBOX")]
        sandbox: Option<SandboxMode>,
    },
    /// Administer a server's data directory.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Activation records: from a server (default), or from a local data directory with --data-dir.
    Activation {
        #[command(subcommand)]
        command: ActivationCommand,
    },
    /// Actions on a server: create, update, invoke, get, list, delete.
    Action {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: ActionCommand,
    },
    /// ASL workflows on a server: create, update, invoke, get, list, delete.
    Workflow {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Remember the API host and key for the client commands (like `wsk property set`).
    Property {
        #[command(subcommand)]
        command: PropertyCommand,
    },
    /// Benchmarks; results go to stdout as Markdown and, with --json, to a file.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// API keys (`uuid:key`) of a namespace.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Print a new `uuid:key` for NAMESPACE.
    Create {
        namespace: String,
        #[arg(long, default_value = ".specfaas")]
        data_dir: PathBuf,
    },
    /// List NAMESPACE's keys (their uuids; keys themselves are stored hashed).
    List {
        namespace: String,
        #[arg(long, default_value = ".specfaas")]
        data_dir: PathBuf,
    },
    /// Revoke one of NAMESPACE's keys, by uuid.
    Revoke {
        namespace: String,
        uuid: String,
        #[arg(long, default_value = ".specfaas")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
pub(crate) struct ServerArgs {
    /// The server, e.g. http://127.0.0.1:3233 [env: SPECFAAS_APIHOST, else `property set`].
    #[arg(long, global = true)]
    pub(crate) apihost: Option<String>,
    /// The key, `uuid:key` [env: SPECFAAS_AUTH, else `property set`].
    #[arg(long, global = true)]
    pub(crate) auth: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum PropertyCommand {
    Set {
        #[arg(long)]
        apihost: Option<String>,
        #[arg(long)]
        auth: Option<String>,
    },
}

/// What an action is made of: a code file, or a sequence of other actions.
#[derive(clap::Args)]
pub(crate) struct ActionSource {
    pub(crate) name: String,
    /// The code file (kind from --kind or the extension).
    pub(crate) file: Option<PathBuf>,
    #[arg(long)]
    pub(crate) kind: Option<String>,
    #[arg(long)]
    pub(crate) main: Option<String>,
    /// Make a sequence of these actions instead, comma-separated.
    #[arg(long)]
    pub(crate) sequence: Option<String>,
    /// Bound parameter, KEY=VALUE (VALUE as JSON when it parses).
    #[arg(long = "param", short = 'p')]
    pub(crate) params: Vec<String>,
}

/// How to invoke an action or workflow.
#[derive(clap::Args)]
pub(crate) struct InvokeArgs {
    pub(crate) name: String,
    /// Parameter, KEY=VALUE (VALUE as JSON when it parses).
    #[arg(long = "param", short = 'p')]
    pub(crate) params: Vec<String>,
    /// Wait for the activation and print its record.
    #[arg(long, short = 'b')]
    pub(crate) blocking: bool,
    /// Wait and print only the result.
    #[arg(long, short = 'r')]
    pub(crate) result: bool,
}

#[derive(Subcommand)]
pub(crate) enum ActionCommand {
    /// Create an action from a code file or --sequence a,b,c.
    Create(ActionSource),
    /// Like create, replacing an existing action.
    Update(ActionSource),
    /// Invoke an action (non-blocking unless --blocking or --result).
    Invoke(InvokeArgs),
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum WorkflowCommand {
    /// Create a workflow from an ASL file (JSON or YAML).
    Create {
        name: String,
        file: PathBuf,
    },
    /// Like create, replacing an existing workflow.
    Update {
        name: String,
        file: PathBuf,
    },
    /// Invoke a workflow (non-blocking unless --blocking or --result).
    Invoke(InvokeArgs),
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ActivationCommand {
    /// List records, newest first.
    List {
        /// Read a local data directory instead of a server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
        /// Only records of this function or application.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 30)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// Print one record.
    Get {
        id: String,
        /// Read a local data directory instead of a server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print an activation's logs (from a server).
    Logs {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print an activation's response (from a server).
    Result {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Hand-off cost between functions on a chain of no-op functions, native and Python (and Node.js).
    Handoff {
        /// Functions in the chain.
        #[arg(long, default_value_t = 10)]
        chain: usize,
        /// Measured invocations per runtime (after warm-up).
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A Map of 16 and a Parallel of 4 branches of 20 ms Python functions: sequential, concurrent without
    /// speculation, and with it, against the critical path.
    Fanout {
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// How soon a speculative Python run's held `connect` goes on once the run is non-speculative (sandbox on).
    Held {
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The engine's own cost per function launch and commit, and per buffered access (in-process, no I/O).
    Engine {
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The examples (smarthome, travel) with speculation off and on, interleaved in one run.
    Examples {
        /// The examples directory.
        #[arg(long, default_value = "examples")]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Concurrent HTTP clients against `specfaas serve`: throughput, p50/p99, nothing lost or duplicated.
    Load {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Requests per client and target.
        #[arg(long, default_value_t = 50)]
        requests: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The SpecFaaS paper's evaluation: its 16 applications (examples/paper) with speculation off and on, at
    /// three loads; speedup, oracle bound, tail latency, throughput, hit-rate sweep, CPU. Progress on stderr, the
    /// Markdown report on stdout.
    Paper {
        /// All 16 applications at one load with short runs (under two minutes); proves the harness works.
        #[arg(long)]
        quick: bool,
        /// Seeds inputs and arrivals.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The examples directory (holding paper/).
        #[arg(long, default_value = "examples")]
        dir: PathBuf,
        /// Only these applications (comma-separated names, such as login,tcktapp,ali1).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Run the functions confined (`enforce`, the default) or not (`off`).
        #[arg(long, default_value = "enforce")]
        sandbox: SandboxMode,
        /// Also write the report (report.md), its SVG plots and results.json into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// One piece of speculation on and off (each side with its own tables, the same inputs) on the paper's
    /// applications it applies to: callee path prediction (`paths`: TrainTicket and Alibaba, low and medium
    /// load), idle CPU for speculative runs (`idle-cpu`: all 16, medium and high load), reusing the handlers of
    /// squashed runs (`reuse`: all 16, medium and high load), or field-by-field output guesses (`fields`: all 16, low
    /// and medium load).
    Ablation {
        /// The piece: `paths`, `idle-cpu`, `reuse` or `fields`.
        #[arg(long, default_value = "paths")]
        piece: AblationPiece,
        /// Seeds inputs and arrivals.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The examples directory (holding paper/).
        #[arg(long, default_value = "examples")]
        dir: PathBuf,
        /// Only these applications (comma-separated names, such as tcktapp,ali1).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Run the functions confined (`enforce`, the default) or not (`off`).
        #[arg(long, default_value = "enforce")]
        sandbox: SandboxMode,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Latency of killing a running activation (the cost of a squash), per runtime.
    Kill {
        /// Kills per runtime.
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}
