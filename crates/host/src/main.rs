//! `nanoclaw`: the host daemon and its CLI.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nanoclaw",
    version,
    about = "A personal AI assistant whose agents live in sandboxes",
    long_about = "nanoclaw routes your chats to an assistant that runs every agent in a sandbox \
                  (no network of its own, no keys, only its own folder).\n\nData lives in \
                  $NANOCLAW_HOME (default ~/.nanoclaw)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the assistant in the foreground (channels, router, agents, delivery).
    Run,
    /// Talk to the assistant from this terminal; starts it in-process when it is not running.
    Chat {
        /// Send one message, print the reply and exit (for scripts).
        #[arg(short, long)]
        message: Option<String>,
        /// With --message: print the reply as JSON.
        #[arg(long, requires = "message")]
        json: bool,
        /// With --message: seconds to wait for the reply.
        #[arg(long, default_value_t = 900, requires = "message")]
        timeout: u64,
    },
    /// See the whole path work offline: a sandboxed agent runs a command and answers,
    /// driven by a bundled scripted model (no API key needed).
    Demo,
    /// Check that this machine can run nanoclaw, and say how to fix what is missing.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Agent groups: list them, set a group's model or trigger.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// The configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// List agent groups with their trigger, provider and model.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a group's provider, model or trigger (applies to its next agent).
    Set {
        /// The group's folder name, e.g. `main`.
        folder: String,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        trigger: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print where the config file is.
    Path,
    /// Write the commented default config (keeps an existing file unless --force).
    Init {
        #[arg(long)]
        force: bool,
    },
    /// Print the effective configuration.
    Show {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run => cli::run::run().await,
            Command::Chat {
                message,
                json,
                timeout,
            } => cli::chat::chat(message, json, timeout).await,
            Command::Demo => cli::demo::demo().await,
            Command::Doctor { json } => cli::doctor::doctor(json).await,
            Command::Group { command } => match command {
                GroupCommand::List { json } => cli::group::list(json).await,
                GroupCommand::Set {
                    folder,
                    provider,
                    model,
                    trigger,
                } => cli::group::set(folder, provider, model, trigger).await,
            },
            Command::Config { command } => match command {
                ConfigCommand::Path => cli::config::path(),
                ConfigCommand::Init { force } => cli::config::init(force),
                ConfigCommand::Show { json } => cli::config::show(json),
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
