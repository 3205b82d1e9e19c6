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
    Run {
        /// Started by `nanoclaw chat`: log to the data dir and stop once no client is left.
        #[arg(long, hide = true)]
        for_clients: bool,
    },
    /// Talk to the assistant from this terminal; starts it in the background when it is not
    /// running. Piped input: each line is a message, answered before the next is sent.
    Chat {
        /// Send one message, print the reply and exit (for scripts).
        #[arg(short, long)]
        message: Option<String>,
        /// With --message: print the reply as JSON.
        #[arg(long, requires = "message")]
        json: bool,
        /// Seconds to wait for a reply (with --message or piped input).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// See the whole path work offline: a sandboxed agent runs a command and answers,
    /// driven by a bundled scripted model (no API key needed).
    #[cfg(feature = "demo")]
    Demo,
    /// Is the host running (since when, version, runtime), each channel's real state, live
    /// agents and the queue, tasks due next, failures in the last 24 h, and what waits for you
    /// (approvals, held messages). Exit 2 when a channel is down, 3 when the host is not running.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The host's log (JSON lines in $NANOCLAW_HOME/logs/, one file a day), for people or
    /// as JSON; filter by group and time, or follow it.
    Logs {
        /// Keep printing new lines as they are written (across the daily rotation; Ctrl-C stops).
        #[arg(short, long)]
        follow: bool,
        /// Only lines about this group (by folder).
        #[arg(long)]
        group: Option<String>,
        /// Only lines since then: 90s, 30m, 1h, 2d ago, or 2026-12-07T10:00 (local time),
        /// 2026-12-07, or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// Only the last N matching lines (with --follow and no --since: 10).
        #[arg(short = 'n', long)]
        lines: Option<usize>,
        /// The lines as written: one JSON object each.
        #[arg(long)]
        json: bool,
    },
    /// Print a one-time link that signs a browser in to the web dashboard of the running host
    /// (chat, groups, tasks, vault, audit, channels, skills). Exit 3 when no host is running.
    Dashboard {
        /// The link and when it expires as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the running host cleanly (as SIGTERM does) and wait until it is gone. Exit 3 when
    /// none is running.
    Stop {
        /// Seconds to wait for the host to finish shutting down.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Run the host as a service of your user: a systemd user unit (Linux) or a launchd agent
    /// (macOS) that starts it at login and again when it fails.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Print a shell completion script: `nanoclaw completions bash > ~/.local/share/bash-completion/completions/nanoclaw`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from this command line, or write one page per
    /// command into a directory.
    Man {
        /// Write nanoclaw.1, nanoclaw-status.1, … into this directory instead.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// First-run walk-through, safe to repeat (it repairs): config, database, the model key
    /// (verified, kept in the vault; asked for by hidden prompt or read from stdin), the
    /// sandbox runtime (image built if needed), the service.
    Setup {
        /// Also install the service (systemd user unit / launchd agent).
        #[arg(long)]
        service: bool,
        /// Do not build the agent image when the Docker runtime lacks a current one.
        #[arg(long)]
        no_build: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check that this machine can run nanoclaw, and say how to fix what is missing.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Scheduled tasks: list them, show one with its runs, run one now, pause, resume, cancel.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// What agents keep in a group's memory store: search it, list it, forget a memory.
    Memory {
        #[command(subcommand)]
        command: MemoryCommand,
    },
    /// Skills (folders with SKILL.md and skill.toml): list, show, check, install, enable or
    /// disable them for a group, approve a changed one, draw their requirement graph.
    Skills {
        #[command(subcommand)]
        command: SkillsCommand,
    },
    /// Agent groups: list them, set a group's model or trigger.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Chat platforms (Telegram, Discord, Slack, WhatsApp …): add one, see their live health,
    /// restart or remove one.
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Webhooks: signed HTTP POSTs that become turns for a group (the webhook channel).
    #[cfg(feature = "webhook")]
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Which chats reach which agent group, and under what rules; pairing codes for new chats.
    Chats {
        #[command(subcommand)]
        command: ChatsCommand,
    },
    /// The agent container image (used by the Docker runtime): build it, check it.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Secrets (encrypted; agents only ever see placeholders), their grants, and the audit log
    /// of every proxied request. See docs/SECURITY.md.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// The configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Write the unit (~/.config/systemd/user/nanoclaw.service) or plist
    /// (~/Library/LaunchAgents/nanoclaw.host.plist) for this binary, enable and start it.
    /// Running it again rewrites it only when something changed.
    Install,
    /// Stop and disable the service and remove its file.
    Uninstall,
    /// The service manager's view of it (`systemctl --user status`).
    Status,
    /// Start it now.
    Start,
    /// Stop it now (it stays enabled for the next login).
    Stop,
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Every task with its schedule, status and next fire time (in the task's zone).
    List {
        /// Only this group's tasks (by folder).
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One task: its prompt, schedule, next fire times and run history.
    Show {
        task_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a task now, outside its schedule (which does not move).
    RunNow {
        task_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop a task from firing until it is resumed.
    Pause {
        task_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused task from now (runs missed while paused are not made up).
    Resume {
        task_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task for good (its run history stays).
    Cancel {
        task_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SkillsCommand {
    /// Every installed skill (built-in, yours, the group's own) and its state for the group.
    List {
        /// The group (by folder); default the main group.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One skill: where it comes from, its hash, what it grants, its state for the group.
    Show {
        name: String,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Validate every skill, and find enabled ones whose files changed. Exit 1 on a problem.
    Check {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Install a skill from a folder, a .tar.gz (with --sha256) or a git repository (with
    /// --ref), into your skills folder or, with --group, that group's own.
    Install {
        /// A folder, an archive, or a git URL.
        source: String,
        /// The archive's SHA-256 (checked before anything is unpacked).
        #[arg(long)]
        sha256: Option<String>,
        /// A git branch or tag to clone.
        #[arg(long = "ref")]
        reference: Option<String>,
        /// The commit (full hex) the ref must point at.
        #[arg(long, requires = "reference")]
        commit: Option<String>,
        /// The skill's folder inside the repository.
        #[arg(long, requires = "reference")]
        subdir: Option<std::path::PathBuf>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Enable skills (and what they require) for a group; shows what that grants. Applies on
    /// the group's next turn.
    Enable {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Disable skills for a group, removing exactly their grants.
    Disable {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        group: Option<String>,
        /// Also disable the enabled skills that require these.
        #[arg(long)]
        with_dependents: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve a skill's changed files (its new hash and grants); a paused skill resumes.
    Approve {
        name: String,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The requirement graph, marking enabled, disabled and broken skills.
    Graph {
        #[arg(long)]
        group: Option<String>,
        /// text, dot (Graphviz), mermaid or svg.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// The group's memories best matching some words (every namespace unless one is named).
    Search {
        /// Words to look for (all must match; when no memory has them all, any may).
        query: String,
        /// The group (by folder); default the main group.
        #[arg(long)]
        group: Option<String>,
        /// Only this namespace: `shared` or `skill:<name>`.
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The group's memories, most recent first.
    List {
        /// The group (by folder); default the main group.
        #[arg(long)]
        group: Option<String>,
        /// Only this namespace: `shared` or `skill:<name>`.
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only memories older than this id (the next page).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Forget one memory of the group by its id.
    Forget {
        id: i64,
        /// The group (by folder); default the main group.
        #[arg(long)]
        group: Option<String>,
    },
}

#[cfg(feature = "webhook")]
#[derive(Subcommand)]
enum WebhookCommand {
    /// Add (or change) a hook: its secret goes into the vault (hidden prompt, or one line on
    /// stdin; empty: generated and shown once), its table into config.toml; prints its URL
    /// and how to sign.
    Add {
        /// The hook's name: its URL is /hooks/NAME.
        name: String,
        /// The agent group (folder) its deliveries go to.
        #[arg(long, default_value = "main")]
        group: String,
        /// How deliveries are signed: github (X-Hub-Signature-256) or generic (X-Signature).
        #[arg(long, default_value = "generic")]
        scheme: String,
        /// Where replies are POSTed; without it they go to your main chat.
        #[arg(long)]
        reply_url: Option<String>,
        /// This hook's body limit in bytes.
        #[arg(long)]
        max_body_bytes: Option<u64>,
    },
    /// The hooks, their URLs, groups and whether their secrets are set.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a hook: its table and its secret (its chat and history stay).
    Remove { name: String },
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// The channels this build has, whether each is enabled and has its secrets.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set up a channel: its tokens go into the vault (hidden prompt, or one per line on
    /// stdin), it is enabled in config.toml, a test call checks them, and a pairing code wires
    /// your first chat.
    Add {
        /// telegram, discord, slack, whatsapp, … (see `nanoclaw channel list`).
        name: String,
        /// A setting for [channels.NAME], e.g. `--set api_base=https://tg.internal`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Skip the test call (and the pairing code).
        #[arg(long)]
        no_verify: bool,
    },
    /// Each channel's real state in the running host: connected or not, since when, the last
    /// event and the last error. Exit 2 when one is down, 3 when the host is not running.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Restart one channel in the running host (the others keep running).
    Restart { name: String },
    /// Disable a channel and delete its tokens and saved state (chats and history stay).
    Remove {
        name: String,
        /// Keep its tokens in the vault.
        #[arg(long)]
        keep_secrets: bool,
    },
}

#[derive(Subcommand)]
enum ChatsCommand {
    /// Every chat the host has seen, what it is wired to, and messages waiting for your approval.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Wire a chat to an agent group, or change the wiring's rules.
    Wire {
        /// The chat's number from `chats list`, or channel:platform-id.
        chat: String,
        /// The group's folder, e.g. `main`.
        group: String,
        /// Which messages wake the group: word (the group's trigger word), mention (the
        /// platform says the bot was addressed), always, regex.
        #[arg(long, default_value = "mention")]
        trigger: String,
        /// The regular expression for --trigger regex.
        #[arg(long)]
        pattern: Option<String>,
        /// Only these platform sender ids may wake the group (repeat; default: anyone).
        #[arg(long = "allow", value_name = "SENDER")]
        allow: Vec<String>,
        /// Senders not on the allowlist: ignore, or ask you in the main chat.
        #[arg(long, default_value = "ignore")]
        unknown_senders: String,
        /// shared (one conversation per chat), per-thread, or agent-shared (one conversation
        /// for the whole group, across every chat wired agent-shared).
        #[arg(long, default_value = "shared")]
        session: String,
    },
    /// Stop routing a chat to a group.
    Unwire { chat: String, group: String },
    /// Make a direct chat with you on a platform your main chat (besides the terminal): it
    /// talks to the main group, takes `/approve`, and gets the host's notices.
    Main {
        /// The chat's number from `chats list`, or channel:platform-id.
        chat: String,
        /// Stop it being a main chat.
        #[arg(long)]
        off: bool,
    },
    /// A one-time code: the chat that sends it to the bot is wired to the group.
    Pair {
        /// The channel, e.g. telegram.
        channel: String,
        #[arg(long, default_value = "main")]
        group: String,
        #[arg(long, default_value_t = 15)]
        minutes: u32,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// List agent groups with their trigger, provider and model.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a group's provider, model, trigger or time zone (applies to its next agent).
    Set {
        /// The group's folder name, e.g. `main`.
        folder: String,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        trigger: Option<String>,
        /// IANA time zone for the group's clock and new scheduled tasks, e.g. `Europe/Berlin`;
        /// `host` goes back to the host's zone.
        #[arg(long)]
        timezone: Option<String>,
    },
    /// Extra host folders a group's agents see at `/workspace/extra/<name>`, allowed only by the
    /// mount allowlist (~/.config/nanoclaw/mount-allowlist.toml; see docs/SECURITY.md).
    Mount {
        #[command(subcommand)]
        command: MountCommand,
    },
    /// What a group's agents may reach on the network (deny by default; loopback, private
    /// and cloud-metadata addresses are always refused).
    Egress {
        #[command(subcommand)]
        command: EgressCommand,
    },
}

#[derive(Subcommand)]
enum EgressCommand {
    /// Allow a host (`api.example.com`) or its subdomains (`*.example.com`).
    Allow { folder: String, pattern: String },
    /// Deny a host or its subdomains (deny wins over allow).
    Deny { folder: String, pattern: String },
    /// Remove a group's rule for a pattern.
    Rm { folder: String, pattern: String },
    /// List a group's egress rules, methods and ports.
    List {
        folder: String,
        #[arg(long)]
        json: bool,
    },
    /// Limit a group to some HTTP methods (`GET,HEAD`), or `all`.
    Methods { folder: String, methods: String },
    /// Set the ports a group may reach (`80,443,8443`), or `default` (80 and 443).
    Ports { folder: String, ports: String },
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
        /// Also install the Debian packages this skill declares (repeatable). Without it, the
        /// packages of every skill enabled in any group are installed.
        #[arg(long = "skill", value_name = "NAME")]
        skills: Vec<String>,
        /// Also install this Debian package (repeatable).
        #[arg(long = "package", value_name = "NAME")]
        packages: Vec<String>,
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
enum VaultCommand {
    /// Store a new secret. The value is read from a hidden prompt, or from stdin when it is not a
    /// terminal (`printenv ANTHROPIC_API_KEY | nanoclaw vault set anthropic`); never from the
    /// command line.
    Set {
        /// Secret name: a-z, 0-9, '_', '.', '-' (at most 64).
        name: String,
        /// Refused: a value on the command line leaks into shell history and /proc.
        #[arg(hide = true, num_args = 0.., allow_hyphen_values = true)]
        value: Vec<String>,
    },
    /// List secrets with versions, times and grants (never values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret with all its versions and grants.
    Rm { name: String },
    /// Give a secret a new value (prompt or stdin); the next request uses it, no restart needed.
    Rotate {
        name: String,
        #[arg(hide = true, num_args = 0.., allow_hyphen_values = true)]
        value: Vec<String>,
    },
    /// Let a group's agents use a secret on a host: it is injected by the egress proxy, the
    /// agent only sees a placeholder.
    Grant {
        name: String,
        /// The group's folder name, e.g. `main`.
        #[arg(long)]
        group: String,
        /// Host name, exact (`api.anthropic.com`) or any subdomain (`*.example.com`).
        #[arg(long)]
        host: String,
        /// Only under this path prefix, e.g. `/v1`.
        #[arg(long)]
        path: Option<String>,
        /// Where the secret goes: `header:x-api-key: {secret}`, `header:Authorization: Bearer
        /// {secret}` or `query:PARAM`.
        #[arg(long)]
        inject: String,
        /// The owner approves the grant's first use in the main chat.
        #[arg(long)]
        approval: bool,
    },
    /// Remove a secret's grants to a group (only those on --host, when given).
    Revoke {
        name: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        host: Option<String>,
    },
    /// Show the audit log of proxied requests.
    Audit {
        #[arg(long)]
        group: Option<String>,
        /// Keep printing new rows as they come (checks every 500 ms; Ctrl-C stops).
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Check the audit log's hash chain (exit status 1 naming the first bad row).
    Verify,
    /// Limit how often a secret is injected: at most N requests per minute (0 = no limit).
    Limit {
        name: String,
        #[arg(long)]
        per_minute: u32,
    },
    /// Grants that need the owner's approval: pending ones first, then decided ones.
    Approvals {
        #[arg(long)]
        json: bool,
    },
    /// Approve grant N (as `/approve N` in the main chat does).
    Approve { grant: i64 },
    /// Deny grant N (as `/deny N` in the main chat does).
    Deny { grant: i64 },
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
            Command::Run { for_clients } => cli::run::run(for_clients).await,
            Command::Chat {
                message,
                json,
                timeout,
            } => cli::chat::chat(message, json, timeout).await,
            #[cfg(feature = "demo")]
            Command::Demo => cli::demo::demo().await,
            Command::Setup {
                service,
                no_build,
                json,
            } => {
                cli::setup::setup(cli::setup::SetupArgs {
                    service,
                    build_image: !no_build,
                    json,
                })
                .await
            }
            Command::Doctor { json } => cli::doctor::doctor(json).await,
            Command::Tasks { command } => match command {
                TasksCommand::List { group, json } => cli::tasks::list(group, json).await,
                TasksCommand::Show { task_id, json } => cli::tasks::show(task_id, json).await,
                TasksCommand::RunNow { task_id, json } => {
                    cli::tasks::change(task_id, cli::tasks::Change::RunNow, json).await
                }
                TasksCommand::Pause { task_id, json } => {
                    cli::tasks::change(task_id, cli::tasks::Change::Pause, json).await
                }
                TasksCommand::Resume { task_id, json } => {
                    cli::tasks::change(task_id, cli::tasks::Change::Resume, json).await
                }
                TasksCommand::Cancel { task_id, json } => {
                    cli::tasks::change(task_id, cli::tasks::Change::Cancel, json).await
                }
            },
            Command::Memory { command } => match command {
                MemoryCommand::Search {
                    query,
                    group,
                    namespace,
                    limit,
                    json,
                } => cli::memory::search(query, group, namespace, limit, json).await,
                MemoryCommand::List {
                    group,
                    namespace,
                    limit,
                    before,
                    json,
                } => cli::memory::list(group, namespace, limit, before, json).await,
                MemoryCommand::Forget { id, group } => cli::memory::forget(id, group).await,
            },
            Command::Skills { command } => skills(command).await,
            Command::Group { command } => group(command).await,
            Command::Status { json } => cli::status::status(json).await,
            Command::Logs {
                follow,
                group,
                since,
                lines,
                json,
            } => {
                cli::logs::logs(cli::logs::LogsArgs {
                    follow,
                    group,
                    since,
                    lines,
                    json,
                })
                .await
            }
            Command::Dashboard { json } => cli::dashboard::dashboard(json).await,
            Command::Stop { timeout } => {
                cli::stop::stop(std::time::Duration::from_secs(timeout)).await
            }
            Command::Service { command } => match command {
                ServiceCommand::Install => cli::service::install().await,
                ServiceCommand::Uninstall => cli::service::uninstall().await,
                ServiceCommand::Status => cli::service::control("status").await,
                ServiceCommand::Start => cli::service::control("start").await,
                ServiceCommand::Stop => cli::service::control("stop").await,
            },
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "nanoclaw", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Man { dir } => man(dir),
            Command::Channel { command } => channel(command).await,
            Command::Chats { command } => chats(command).await,
            #[cfg(feature = "webhook")]
            Command::Webhook { command } => match command {
                WebhookCommand::Add {
                    name,
                    group,
                    scheme,
                    reply_url,
                    max_body_bytes,
                } => {
                    cli::webhook::add(cli::webhook::AddArgs {
                        name,
                        group,
                        scheme,
                        reply_url,
                        max_body_bytes,
                    })
                    .await
                }
                WebhookCommand::List { json } => cli::webhook::list(json).await,
                WebhookCommand::Remove { name } => cli::webhook::remove(name).await,
            },
            Command::Image { command } => match command {
                ImageCommand::Build {
                    tag,
                    base,
                    minimal,
                    debootstrap,
                    containerfile,
                    mirror,
                    skills,
                    packages,
                    verbose,
                } => {
                    cli::image::build(cli::image::BuildArgs {
                        tag: tag.unwrap_or_else(cli::image::configured_tag),
                        base,
                        minimal,
                        debootstrap,
                        containerfile,
                        mirror,
                        skills,
                        packages,
                        verbose,
                    })
                    .await
                }
                ImageCommand::Status { tag, json } => {
                    cli::image::status(tag.unwrap_or_else(cli::image::configured_tag), json).await
                }
            },
            Command::Vault { command } => vault(command).await,
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

/// `nanoclaw man`: the page for the whole command on stdout, or one page per command in `dir`.
fn man(dir: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    let command = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(command, &dir)?;
            println!("wrote the man pages into {}", dir.display());
        }
        None => {
            use std::io::Write;
            let mut out = Vec::new();
            clap_mangen::Man::new(command).render(&mut out)?;
            std::io::stdout().write_all(&out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanoclaw channel …`.
async fn channel(command: ChannelCommand) -> anyhow::Result<ExitCode> {
    match command {
        ChannelCommand::List { json } => cli::channel::list(json).await,
        ChannelCommand::Add {
            name,
            settings,
            no_verify,
        } => cli::channel::add(name, settings, !no_verify).await,
        ChannelCommand::Status { json } => cli::channel::status(json).await,
        ChannelCommand::Restart { name } => cli::channel::restart(name).await,
        ChannelCommand::Remove { name, keep_secrets } => {
            cli::channel::remove(name, keep_secrets).await
        }
    }
}

/// `nanoclaw chats …`.
async fn chats(command: ChatsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ChatsCommand::List { json } => cli::chats::list(json).await,
        ChatsCommand::Wire {
            chat,
            group,
            trigger,
            pattern,
            allow,
            unknown_senders,
            session,
        } => {
            cli::chats::wire(cli::chats::WireArgs {
                chat,
                group,
                trigger,
                pattern,
                allow,
                unknown_senders,
                session,
            })
            .await
        }
        ChatsCommand::Unwire { chat, group } => cli::chats::unwire(chat, group).await,
        ChatsCommand::Main { chat, off } => cli::chats::main_chat(chat, off).await,
        ChatsCommand::Pair {
            channel,
            group,
            minutes,
        } => cli::chats::pair(channel, group, minutes).await,
    }
}

/// `nanoclaw group …`.
async fn group(command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::List { json } => cli::group::list(json).await,
        GroupCommand::Set {
            folder,
            provider,
            model,
            trigger,
            timezone,
        } => cli::group::set(folder, provider, model, trigger, timezone).await,
        GroupCommand::Mount { command } => match command {
            MountCommand::Add {
                folder,
                host_path,
                name,
                rw,
            } => cli::group::mount_add(folder, host_path, name, rw).await,
            MountCommand::Rm { folder, name } => cli::group::mount_rm(folder, name).await,
            MountCommand::List { folder, json } => cli::group::mount_list(folder, json).await,
        },
        GroupCommand::Egress { command } => match command {
            EgressCommand::Allow { folder, pattern } => {
                cli::group::egress_set(folder, pattern, nanoclaw_store::EgressAction::Allow).await
            }
            EgressCommand::Deny { folder, pattern } => {
                cli::group::egress_set(folder, pattern, nanoclaw_store::EgressAction::Deny).await
            }
            EgressCommand::Rm { folder, pattern } => cli::group::egress_rm(folder, pattern).await,
            EgressCommand::List { folder, json } => cli::group::egress_list(folder, json).await,
            EgressCommand::Methods { folder, methods } => {
                cli::group::egress_methods(folder, methods).await
            }
            EgressCommand::Ports { folder, ports } => cli::group::egress_ports(folder, ports).await,
        },
    }
}

/// `nanoclaw vault …`.
async fn vault(command: VaultCommand) -> anyhow::Result<ExitCode> {
    match command {
        VaultCommand::Set { name, value } => cli::vault::set(name, value).await,
        VaultCommand::List { json } => cli::vault::list(json).await,
        VaultCommand::Rm { name } => cli::vault::rm(name).await,
        VaultCommand::Rotate { name, value } => cli::vault::rotate(name, value).await,
        VaultCommand::Grant {
            name,
            group,
            host,
            path,
            inject,
            approval,
        } => {
            cli::vault::grant(cli::vault::GrantArgs {
                name,
                group,
                host,
                path,
                inject,
                approval,
            })
            .await
        }
        VaultCommand::Revoke { name, group, host } => cli::vault::revoke(name, group, host).await,
        VaultCommand::Audit {
            group,
            follow,
            json,
        } => cli::vault::audit(group, follow, json).await,
        VaultCommand::Verify => cli::vault::verify().await,
        VaultCommand::Limit { name, per_minute } => cli::vault::limit(name, per_minute).await,
        VaultCommand::Approvals { json } => cli::vault::approvals(json).await,
        VaultCommand::Approve { grant } => cli::vault::decide(grant, true).await,
        VaultCommand::Deny { grant } => cli::vault::decide(grant, false).await,
    }
}

async fn skills(command: SkillsCommand) -> anyhow::Result<ExitCode> {
    use cli::skills as s;
    match command {
        SkillsCommand::List { group, json } => s::list(group, json).await,
        SkillsCommand::Show { name, group, json } => s::show(name, group, json).await,
        SkillsCommand::Check { group, json } => s::check(group, json).await,
        SkillsCommand::Install {
            source,
            sha256,
            reference,
            commit,
            subdir,
            group,
            json,
        } => {
            let from = s::InstallFrom {
                source,
                sha256,
                reference,
                commit,
                subdir,
            };
            s::install(from, group, json).await
        }
        SkillsCommand::Enable { names, group, json } => s::enable(names, group, json).await,
        SkillsCommand::Disable {
            names,
            group,
            with_dependents,
            json,
        } => s::disable(names, group, with_dependents, json).await,
        SkillsCommand::Approve { name, group, json } => s::approve(name, group, json).await,
        SkillsCommand::Graph { group, format } => s::graph(group, format).await,
    }
}
