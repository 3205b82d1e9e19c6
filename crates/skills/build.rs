//! Embeds the bundled skills (`bundled/<skill>/…`) into the library as [`FILES`]: the host
//! writes them out as its built-in skills source, so a release binary carries them.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundled");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    // Only files inside a skill folder; the folder's own README is documentation.
    let mut skills: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    skills.retain(|p| p.is_dir());
    skills.sort();
    for skill in skills {
        walk(&skill, &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// Every file of the bundled skills, by path relative to the built-in skills folder.\npub const FILES: &[BundledFile] = &[\n",
    );
    for file in files {
        let rel = file
            .strip_prefix(&root)
            .ok()
            .and_then(Path::to_str)
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{} is not a UTF-8 path", file.display()));
        let executable = std::fs::metadata(&file)
            .map(|m| m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        let _ = writeln!(
            out,
            "    BundledFile {{ path: {rel:?}, contents: include_bytes!({:?}), executable: {executable} }},",
            file.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest =
        Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("bundled.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("writing {}: {e}", dest.display());
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, files),
            Ok(t) if t.is_file() => files.push(path),
            // Symlinks and the like are refused by the loader; never embed them.
            _ => panic!("{} is not a regular file or folder", path.display()),
        }
    }
}
