//! Helpers shared by the skills tests: skill folders written into temporary directories.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The committed fixture skills (written in the style of published skills).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/skills")
}

/// Writes `content` to `dir/rel`, creating folders.
pub fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A SKILL.md with this frontmatter (no `---` lines) and a short body.
pub fn skill_md(frontmatter: &str) -> String {
    format!("---\n{frontmatter}\n---\n\n# Instructions\n\nDo the thing.\n")
}

/// Writes a skill folder `root/name` with a minimal valid SKILL.md and, if given, skill.toml.
pub fn skill(root: &Path, name: &str, toml: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    write(
        &dir,
        "SKILL.md",
        &skill_md(&format!(
            "name: {name}\ndescription: Test skill {name}. Use when testing."
        )),
    );
    if let Some(t) = toml {
        write(&dir, "skill.toml", t);
    }
    dir
}

/// Copies a fixture skill into `root`.
pub fn copy_fixture(name: &str, root: &Path) -> PathBuf {
    let dst = root.join(name);
    copy_dir(&fixtures().join(name), &dst);
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}
