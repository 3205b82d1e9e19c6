//! `nanoclaw demo`: the whole message path, offline, with a scripted model.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use nanoclaw_egress::relay::{ModelUpstreams, Upstream, UpstreamAuth};
use nanoclaw_host::channel::terminal::TerminalClient;
use nanoclaw_host::config::{Config, Paths};
use nanoclaw_host::{Host, HostOptions};
use nanoclaw_scripted_model::{Scenario, ScriptedModel};

const DEMO_KEY: &str = "demo-key-held-by-the-host-only";

pub async fn demo() -> anyhow::Result<ExitCode> {
    let color = super::color();
    let bold = |s: &str| {
        if color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    eprintln!(
        "{}",
        bold("nanoclaw demo — the model here is SCRIPTED: no LLM, no API key, no network.")
    );
    eprintln!(
        "Everything else is real: the sandbox, the host<->agent protocol, the key-injecting model relay,\n\
         the SQLite store and delivery. Run `nanoclaw chat` with ANTHROPIC_API_KEY set for the real thing.\n"
    );

    let home = std::env::temp_dir().join(format!(
        "nanoclaw-demo-{}-{}",
        std::process::id(),
        nanoclaw_host::random_suffix(6)
    ));
    let result = run_demo(&home).await;
    let _ = std::fs::remove_dir_all(&home);
    result
}

async fn run_demo(home: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut scenario = Scenario::demo_uname();
    scenario.api_key = Some(DEMO_KEY.to_owned());
    let model = ScriptedModel::start(scenario)
        .await
        .context("starting the scripted model")?;
    let paths = Paths::new(home);
    paths.prepare()?;
    super::init_logging(super::LogTo::File(&paths.logs_dir().join("nanoclaw.log")));
    let options = HostOptions {
        paths: paths.clone(),
        config: Config::default(),
        upstreams: ModelUpstreams {
            anthropic: Some(Upstream {
                base_url: model.base_url(),
                auth: UpstreamAuth::XApiKey(DEMO_KEY.to_owned()),
            }),
            openai: None,
        },
        runtime: None,
        agent_binary: None,
        master_key: None,
        clock: None,
    };
    let host = Host::start(options).await?;
    match host.runtime() {
        Ok(name) => eprintln!("sandbox runtime: {name}"),
        Err(why) => {
            eprintln!("error: {why}");
            host.shutdown().await;
            return Ok(ExitCode::FAILURE);
        }
    }
    let mut client = TerminalClient::connect(&paths.terminal_socket()).await?;
    let question = "@Andy which kernel is this machine running?";
    eprintln!("you> {question}");
    let code = super::chat::one_shot(&mut client, question, false, Duration::from_secs(120)).await;
    host.shutdown().await;
    code
}
