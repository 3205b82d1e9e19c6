//! `nanoclaw image …`: build the agent container image and check it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use nanoclaw_sandbox::image::{
    self, BuildEvent, IMAGE_VERSION, ImageBuild, ImageKind, ImageStatus, LABEL_KIND,
};

/// What `nanoclaw image build` was asked for.
pub struct BuildArgs {
    pub tag: String,
    pub base: String,
    pub minimal: bool,
    pub debootstrap: bool,
    pub containerfile: Option<PathBuf>,
    pub mirror: Option<String>,
    /// Skills whose declared packages to install.
    pub skills: Vec<String>,
    /// Packages to install.
    pub packages: Vec<String>,
    pub verbose: bool,
}

pub async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let kind = match (args.minimal, args.debootstrap) {
        (true, true) => anyhow::bail!("choose one of --minimal and --debootstrap"),
        (true, false) => ImageKind::Minimal,
        (false, true) => ImageKind::Debootstrap,
        (false, false) => ImageKind::Debian,
    };
    let packages = packages_for(&args, kind).await?;
    if !packages.is_empty() {
        println!("installing for skills: {}", packages.join(" "));
    }
    let spec = ImageBuild {
        tag: args.tag,
        base: args.base,
        kind,
        containerfile: args.containerfile,
        mirror: args.mirror,
        busybox: None,
        packages,
    };
    let docker = image::connect().await?;
    let started = Instant::now();
    let mut display = Display::new(args.verbose);
    let result = image::build(&docker, &spec, &mut |event| display.event(event)).await;
    display.finish();
    result.with_context(|| format!("building the agent image {}", spec.tag))?;
    println!(
        "built {} ({}, version {IMAGE_VERSION}) in {:.1}s",
        spec.tag,
        match kind {
            ImageKind::Minimal => "minimal: busybox only",
            ImageKind::Debian => "debian",
            ImageKind::Debootstrap => "debian, debootstrap base",
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The packages to install: those named, those of the named skills and, for a Debian image,
/// those of every skill enabled in any group (when nanoclaw is set up here).
async fn packages_for(args: &BuildArgs, kind: ImageKind) -> anyhow::Result<Vec<String>> {
    let mut packages: std::collections::BTreeSet<String> = args.packages.iter().cloned().collect();
    let enabled = kind != ImageKind::Minimal;
    if enabled || !args.skills.is_empty() {
        match super::open_existing() {
            Ok((paths, _, store)) => {
                let of_skills =
                    nanoclaw_host::skills::image_packages(&store, &paths, &args.skills, enabled)
                        .await
                        .map_err(anyhow::Error::msg)?;
                packages.extend(of_skills);
            }
            Err(e) if !args.skills.is_empty() => {
                return Err(e.context("finding the skills named by --skill"));
            }
            // Not set up yet: no skill is enabled anywhere.
            Err(_) => {}
        }
    }
    for p in &packages {
        nanoclaw_sandbox::packages::check_package_name(p).map_err(anyhow::Error::msg)?;
    }
    Ok(packages.into_iter().collect())
}

/// Prints the image's status; exits 0 only when it is current.
pub async fn status(tag: String, json: bool) -> anyhow::Result<ExitCode> {
    let docker = image::connect().await?;
    let status = image::try_image_status(&docker, &tag).await?;
    let kind = match status {
        ImageStatus::Missing => None,
        _ => image::image_labels(&docker, &tag)
            .await?
            .and_then(|mut l| l.remove(LABEL_KIND)),
    };
    let (name, found) = match &status {
        ImageStatus::Missing => ("missing", None),
        ImageStatus::Outdated { found } => ("outdated", Some(found.as_str())),
        ImageStatus::Current => ("current", Some(IMAGE_VERSION)),
    };
    let remedy = status.remedy(&tag);
    if json {
        let value = serde_json::json!({
            "tag": tag,
            "status": name,
            "version": found,
            "expected_version": IMAGE_VERSION,
            "kind": kind,
            "remedy": remedy,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        match &status {
            ImageStatus::Current => println!(
                "{tag}: current (version {IMAGE_VERSION}, {})",
                kind.as_deref().unwrap_or("unknown kind")
            ),
            _ => {
                println!("{tag}: {name}");
                if let Some(r) = &remedy {
                    println!("{r}");
                }
            }
        }
    }
    Ok(if status == ImageStatus::Current {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Turns build events into a spinner with the current step (on a terminal; `verbose` also prints
/// the output above it) or plain lines of everything (otherwise).
struct Display {
    bar: Option<ProgressBar>,
    verbose: bool,
    step: String,
}

impl Display {
    fn new(verbose: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = if super::color() {
                "{spinner:.cyan} [{elapsed}] {msg}"
            } else {
                "{spinner} [{elapsed}] {msg}"
            };
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            verbose,
            step: String::new(),
        }
    }

    fn event(&mut self, event: BuildEvent) {
        match (&self.bar, event) {
            (Some(bar), BuildEvent::Step { text, .. }) => {
                self.step = shorten(&text, 70);
                if self.verbose {
                    bar.println(&text);
                }
                bar.set_message(self.step.clone());
            }
            (Some(bar), BuildEvent::Log(line)) => {
                if self.verbose {
                    bar.println(format!("  {line}"));
                }
                bar.set_message(format!("{}  {}", self.step, shorten(&line, 50)));
            }
            (None, BuildEvent::Step { text, .. }) => eprintln!("{text}"),
            // Not a terminal (CI, logs): the whole output, plainly.
            (None, BuildEvent::Log(line)) => eprintln!("  {line}"),
            (_, BuildEvent::Done { .. }) => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// At most `max` characters, on one line.
fn shorten(text: &str, max: usize) -> String {
    let text = text.trim().replace(['\r', '\n', '\t'], " ");
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The image the config names (`agents.docker.image`); the default tag when there is no
/// readable config.
pub fn configured_tag() -> String {
    nanoclaw_host::config::Paths::from_env()
        .ok()
        .and_then(|p| nanoclaw_host::config::Config::load(&p.config_file()).ok())
        .map(|c| c.agents.docker.image)
        .unwrap_or_else(|| nanoclaw_sandbox::image::DEFAULT_TAG.to_owned())
}
