//! The agent image: the Containerfile recipe, and builds/status checks against the real engine.
//! Engine tests print SKIPPED and return when no container engine answers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;
use nanoclaw_sandbox::image::{
    self, BuildEvent, CONTAINERFILE, IMAGE_VERSION, ImageBuild, ImageKind, ImageStatus, LABEL_KIND,
    LABEL_VERSION,
};

/// The Containerfile's instructions with `\` continuations joined.
fn instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in CONTAINERFILE.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn containerfile_installs_every_required_package() {
    let run = instructions()
        .into_iter()
        .find(|i| i.starts_with("RUN") && i.contains("apt-get install"))
        .expect("an apt-get install step");
    let after = run.split("apt-get install").nth(1).expect("packages");
    let packages: Vec<&str> = after
        .split("&&")
        .next()
        .expect("package list")
        .split_whitespace()
        .filter(|w| !w.starts_with('-'))
        .collect();
    for required in [
        "bash",
        "coreutils",
        "git",
        "curl",
        "ca-certificates",
        "python3",
        "ripgrep",
        "jq",
    ] {
        assert!(
            packages.contains(&required),
            "{required} missing from {packages:?}"
        );
    }
    assert!(run.contains("--no-install-recommends"), "{run}");
    assert!(run.contains("rm -rf /var/lib/apt/lists"), "{run}");
}

#[test]
fn containerfile_runs_as_agent_uid_1000_without_entrypoint() {
    let all = instructions();
    assert!(
        all.iter().any(|i| i.starts_with("RUN")
            && i.contains("useradd --uid 1000")
            && i.contains(" agent")),
        "no `useradd --uid 1000 … agent` in {all:#?}"
    );
    assert!(all.iter().any(|i| i == "USER agent"));
    assert!(all.iter().any(|i| i == "WORKDIR /workspace/group"));
    assert!(all.iter().any(|i| i == "ARG BASE=debian:bookworm-slim"));
    assert!(all.iter().any(|i| i == "FROM ${BASE}"));
    // The runtime sets the command and mounts the agent binary; the image must not get in the way.
    assert!(
        !all.iter()
            .any(|i| i.starts_with("ENTRYPOINT") || i.starts_with("CMD"))
    );
    assert!(!CONTAINERFILE.contains("nanoclaw-agent "));
}

async fn engine() -> Option<Docker> {
    match image::connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED: no container engine answers: {e}");
            None
        }
    }
}

fn unique_tag(what: &str) -> String {
    format!("nanoclaw-test-image-{}:{what}", std::process::id())
}

async fn remove_image(docker: &Docker, tag: &str) {
    let options = RemoveImageOptionsBuilder::new().force(true).build();
    let _ = docker.remove_image(tag, Some(options), None).await;
}

/// Runs `cmd` in a fresh container of `tag` (no network) and returns (exit code, output).
async fn run_in(docker: &Docker, tag: &str, cmd: &[&str]) -> (i64, String) {
    let name = format!("nanoclaw-test-run-{}", std::process::id());
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    let body = ContainerCreateBody {
        image: Some(tag.to_string()),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        network_disabled: Some(true),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .expect("create container");
    docker
        .start_container(&name, None)
        .await
        .expect("start container");
    let mut code = 0;
    let mut wait = docker.wait_container(&name, None);
    while let Some(r) = wait.next().await {
        match r {
            Ok(w) => code = w.status_code,
            Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
            Err(e) => panic!("wait: {e}"),
        }
    }
    let mut output = String::new();
    let mut logs = docker.logs(
        &name,
        Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
    );
    while let Some(chunk) = logs.next().await {
        output.push_str(&chunk.expect("logs").to_string());
    }
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    (code, output)
}

#[tokio::test]
async fn minimal_build_is_current_labelled_and_runs_as_agent() {
    let Some(docker) = engine().await else { return };
    let tag = unique_tag("minimal");
    let build = ImageBuild {
        tag: tag.clone(),
        kind: ImageKind::Minimal,
        ..Default::default()
    };
    let mut events = Vec::new();
    image::build(&docker, &build, &mut |e| events.push(e))
        .await
        .expect("minimal build");
    assert!(
        matches!(events.last(), Some(BuildEvent::Done { tag: t, .. }) if *t == tag),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, BuildEvent::Step { .. })),
        "no step reported: {events:?}"
    );

    let labels = image::image_labels(&docker, &tag)
        .await
        .expect("inspect")
        .expect("image exists");
    assert_eq!(
        labels.get(LABEL_VERSION).map(String::as_str),
        Some(IMAGE_VERSION)
    );
    assert_eq!(labels.get(LABEL_KIND).map(String::as_str), Some("minimal"));
    assert_eq!(
        image::image_status(&docker, &tag).await,
        ImageStatus::Current
    );

    let (code, output) = run_in(&docker, &tag, &["/bin/sh", "-c", "id -u; ls /bin/cat; pwd"]).await;
    remove_image(&docker, &tag).await;
    assert_eq!(code, 0, "{output}");
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    assert_eq!(lines, ["1000", "/bin/cat", "/workspace/group"], "{output}");
}

/// Imports a one-file image with the given labels.
async fn import_labelled(docker: &Docker, tag: &str, labels: &HashMap<&str, &str>) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let data = b"agent:x:1000:1000::/:/bin/sh\n";
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "etc/passwd", &data[..])
        .expect("tar");
    let bytes = bytes::Bytes::from(tar.into_inner().expect("tar"));
    let (repo, t) = image::split_tag(tag);
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(t)
        .changes(
            labels
                .iter()
                .map(|(k, v)| format!("LABEL {k}={v}"))
                .collect(),
        )
        .build();
    let mut stream = docker.create_image(Some(options), Some(bollard::body_full(bytes)), None);
    while let Some(item) = stream.next().await {
        let info = item.expect("import");
        assert!(info.error_detail.is_none(), "{info:?}");
    }
}

#[tokio::test]
async fn an_image_from_another_recipe_is_outdated() {
    let Some(docker) = engine().await else { return };
    let tag = unique_tag("outdated");
    import_labelled(
        &docker,
        &tag,
        &HashMap::from([(LABEL_VERSION, "0000000000000000"), (LABEL_KIND, "minimal")]),
    )
    .await;
    let status = image::image_status(&docker, &tag).await;
    let remedy = status.remedy(&tag);
    remove_image(&docker, &tag).await;
    assert_eq!(
        status,
        ImageStatus::Outdated {
            found: "0000000000000000".into()
        }
    );
    let remedy = remedy.expect("an outdated image needs a rebuild");
    assert!(remedy.contains("nanoclaw image build"), "{remedy}");
}

#[tokio::test]
async fn an_image_without_a_version_label_is_outdated() {
    let Some(docker) = engine().await else { return };
    let tag = unique_tag("unlabelled");
    import_labelled(&docker, &tag, &HashMap::new()).await;
    let status = image::image_status(&docker, &tag).await;
    remove_image(&docker, &tag).await;
    assert_eq!(
        status,
        ImageStatus::Outdated {
            found: "unlabelled".into()
        }
    );
}

#[tokio::test]
async fn a_missing_tag_is_missing() {
    let Some(docker) = engine().await else { return };
    let tag = unique_tag("never-built");
    assert_eq!(
        image::image_status(&docker, &tag).await,
        ImageStatus::Missing
    );
    assert_eq!(
        image::try_image_status(&docker, &tag)
            .await
            .expect("engine answers"),
        ImageStatus::Missing
    );
    let remedy = ImageStatus::Missing
        .remedy(&tag)
        .expect("missing needs a build");
    assert!(
        remedy.contains("--minimal") && remedy.contains("--debootstrap"),
        "{remedy}"
    );
}

#[tokio::test]
async fn an_unpullable_base_names_the_offline_ways() {
    let Some(docker) = engine().await else { return };
    // A reference that is neither local nor pullable (invalid registry host under .invalid).
    let build = ImageBuild {
        tag: unique_tag("nobase"),
        base: "registry.nanoclaw.invalid/nothing:here".into(),
        kind: ImageKind::Debian,
        ..Default::default()
    };
    let err = image::build(&docker, &build, &mut |_| {})
        .await
        .expect_err("the base cannot be had");
    let text = err.to_string();
    assert!(
        matches!(err, image::ImageError::BaseUnavailable { .. }),
        "{text}"
    );
    assert!(
        text.contains("--debootstrap") && text.contains("--minimal"),
        "{text}"
    );
}
