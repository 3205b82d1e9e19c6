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
    /// The agent container image (used by the Docker runtime): build it, check it.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
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
    /// Extra host folders a group's agents see at /workspace/extra/<name>, allowed only by the
    /// mount allowlist (~/.config/nanoclaw/mount-allowlist.toml; see docs/SECURITY.md).
    Mount {
        #[command(subcommand)]
        command: MountCommand,
    },
}

#[derive(Subcommand)]
enum MountCommand {
    /// Give a group a host folder (checked against the allowlist now and at every agent start).
    Add {
        /// The group's folder name, e.g. `main`.
        folder: String,
        /// The host folder (symlinks are resolved; the resolved folder is what gets mounted).
        host_path: std::path::PathBuf,
        /// Name inside the sandbox (/workspace/extra/NAME); default: the folder's own name.
        #[arg(long)]
        name: Option<String>,
        /// Ask for read-write (granted only where the allowlist allows it).
        #[arg(long)]
        rw: bool,
    },
    /// Remove a group's mount (its next agent no longer sees it).
    Rm { folder: String, name: String },
    /// List a group's mounts with what the allowlist says about each today.
    List {
        folder: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build the agent image from container/Containerfile (Debian with git, curl, python3,
    /// ripgrep, jq…; user `agent`, uid 1000). The agent binary is mounted at run time, so a
    /// nanoclaw upgrade needs a rebuild only when `image status` says outdated.
    Build {
        /// Image tag (default: `agents.docker.image` from the config).
        #[arg(long)]
        tag: Option<String>,
        /// Base image for the Containerfile (must be local or pullable).
        #[arg(long, default_value = nanoclaw_sandbox::image::DEFAULT_BASE)]
        base: String,
        /// No registry needed: a tiny busybox-only image from this machine's static busybox
        /// (Debian package busybox-static).
        #[arg(long, conflicts_with_all = ["debootstrap", "base", "containerfile"])]
        minimal: bool,
        /// No registry needed: make a Debian base with debootstrap (needs root and Debian's
        /// mirror), then build the Containerfile on it.
        #[arg(long, conflicts_with = "base")]
        debootstrap: bool,
        /// Build this Containerfile instead of the bundled one.
        #[arg(long)]
        containerfile: Option<std::path::PathBuf>,
        /// Debian mirror for --debootstrap.
        #[arg(long, requires = "debootstrap")]
        mirror: Option<String>,
        /// On a terminal, print the build output above the progress line.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Say whether the agent image exists and is current (exit status 1 when it is not).
    Status {
        /// Image tag (default: `agents.docker.image` from the config).
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        json: bool,
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
                GroupCommand::Mount { command } => match command {
                    MountCommand::Add {
                        folder,
                        host_path,
                        name,
                        rw,
                    } => cli::group::mount_add(folder, host_path, name, rw).await,
                    MountCommand::Rm { folder, name } => cli::group::mount_rm(folder, name).await,
                    MountCommand::List { folder, json } => {
                        cli::group::mount_list(folder, json).await
                    }
                },
            },
            Command::Image { command } => match command {
                ImageCommand::Build {
                    tag,
                    base,
                    minimal,
                    debootstrap,
                    containerfile,
                    mirror,
                    verbose,
                } => {
                    cli::image::build(cli::image::BuildArgs {
                        tag: tag.unwrap_or_else(cli::image::configured_tag),
                        base,
                        minimal,
                        debootstrap,
                        containerfile,
                        mirror,
                        verbose,
                    })
                    .await
                }
                ImageCommand::Status { tag, json } => {
                    cli::image::status(tag.unwrap_or_else(cli::image::configured_tag), json).await
                }
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
