//! The `portcullis` binary: parse the command line, start logging, and dispatch to the command's code in
//! the library ([`portcullis::cli`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use portcullis::cli;
use portcullis::telemetry::{self, LogFormat};

/// mimalloc gives freed memory back to the OS on its own: after a configuration of 100,000 routes is
/// parsed and built (start or reload), the parser's heap does not stay resident as it does with glibc's
/// malloc (which needs `malloc_trim`, an `unsafe` call the workspace forbids).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Envoy external authorization (ext_authz v3) service"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PORTCULLIS_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Check (gRPC) and the admin endpoints (HTTP).
    Serve(cli::ServeArgs),
    /// Print a token the `serve --dev` server accepts, signed with the key in its state directory (never
    /// made here: exits 1 when there is none); with `--iss`, a token for another issuer, signed with a key
    /// made for this run whose key set `--write-jwks` writes (for `explain --jwks`).
    Token(cli::TokenArgs),
    /// Send one Check to a running server and print the decision as JSON.
    /// Exits 0 when allowed, 3 when denied, 4 when the server could not decide, 1 when it could not ask;
    /// with `--expect`, 0 when the answer is the expected one and 5 when it is another.
    Check(cli::CheckArgs),
    /// Parse and validate a configuration file (or a directory of `*.yaml` fragments); print every problem
    /// with the path of its field (and the fragment's file).
    /// Exits 0 when valid, 64 when not.
    ValidateConfig(cli::ValidateArgs),
    /// Evaluate a request offline, through the same code path as the server, and print the decision with
    /// its explanation (route, providers tried, requirements). Exits 0 when allowed, 3 when denied, 4 when
    /// it could not decide (as `check`), 64 when the configuration cannot be used, 1 on any other failure.
    Explain(cli::ExplainArgs),
    /// Print the SHA-256 digest of an API key for an `api_key` provider's `sha256`. Reads the key from
    /// standard input (one line) unless given, so it stays out of shell history.
    HashKey(cli::HashKeyArgs),
    /// Revoke tokens through a server's admin API (`--sub`, `--jti`, `--sid` or `--client-id`); the secret
    /// comes from PORTCULLIS_ADMIN_SECRET. With `--undo`, lift the revocation.
    Revoke(cli::RevokeArgs),
    /// Convert another tool's authentication configuration (`import llama-stack FILE`).
    Import(cli::ImportArgs),
    /// The configuration file's JSON Schema (`config schema`), for editors and CI.
    Config(cli::ConfigArgs),
    /// Load-test an ext_authz server beside a no-op one; exits 2 when it saw errors or wrong decisions.
    Bench(portcullis_bench::BenchArgs),
    /// Print shell completions to standard output, e.g. `portcullis completions bash >
    /// /etc/bash_completion.d/portcullis`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages into DIR: portcullis.1 and one per command (portcullis-serve.1, …).
    Man {
        /// Where the pages go (made when missing).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only `serve` writes the decision log: the other commands' stdout is their answer.
    let serving = matches!(cli.command, Command::Serve(_));
    let _telemetry = telemetry::init(cli.log_format, serving);
    match cli.command {
        Command::ValidateConfig(args) => cli::validate_config(&args),
        Command::Token(args) => cli::token(&args),
        Command::HashKey(args) => cli::hash_key(args),
        Command::Serve(args) => cli::serve(args),
        Command::Check(args) => cli::check(args),
        Command::Explain(args) => cli::explain(args),
        Command::Revoke(args) => cli::revoke(args),
        Command::Import(args) => cli::import(&args),
        Command::Config(args) => cli::config(&args),
        Command::Bench(args) => cli::bench(args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "portcullis", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match man_pages(&dir) {
            Ok(written) => {
                for path in written {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: cannot write man pages into `{}`: {e}",
                    dir.display()
                );
                ExitCode::from(1)
            }
        },
    }
}

/// The man pages of the command and of each subcommand, from the same definitions as `--help`.
fn man_pages(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let command = <Cli as clap::CommandFactory>::command();
    let mut written = Vec::new();
    let mut write = |name: String, command: clap::Command| -> std::io::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command.name(name.clone())).render(&mut page)?;
        std::fs::write(&path, page)?;
        written.push(path);
        Ok(())
    };
    for sub in command.get_subcommands() {
        write(format!("portcullis-{}", sub.get_name()), sub.clone())?;
    }
    write("portcullis".to_owned(), command)?;
    Ok(written)
}
