//! Properties: bad input never panics, and resolution is right on random graphs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nanoclaw_skills::{Catalog, ResolveError, Source, frontmatter, install_from_archive, manifest};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_skill_md_text_gives_a_result_not_a_panic(body in ".{0,400}", fm in "[a-z:\\- \\n\\[\\]{}&*!|>\"'#0-9]{0,200}") {
        let file = Path::new("x/SKILL.md");
        let _ = frontmatter::parse(&body, file, Some("x"));
        let _ = frontmatter::parse(&format!("---\n{fm}\n---\n{body}"), file, Some("x"));
    }

    #[test]
    fn any_skill_toml_text_gives_a_result_not_a_panic(text in "[a-z_\\[\\]=\\.\"{}, \\n0-9*/:-]{0,300}") {
        let tmp = tempfile::tempdir().unwrap();
        let _ = manifest::parse(&text, tmp.path(), &tmp.path().join("skill.toml"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_archive_bytes_with_a_matching_hash_give_a_result_not_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        gzip in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let data = if gzip {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap()
        } else {
            bytes
        };
        let path = tmp.path().join("a.tar.gz");
        std::fs::write(&path, &data).unwrap();
        let hash = hex::encode(Sha256::digest(&data));
        let dest = tmp.path().join("skills");
        prop_assert!(install_from_archive(&path, &hash, &dest).is_err());
        // Nothing half-installed is left.
        prop_assert!(!dest.exists());
    }

    /// Random requirement graphs over 7 skills: resolution ends, and either gives an order where
    /// every skill follows what it requires and which holds exactly what is reachable, or
    /// reports a cycle that really is one.
    #[test]
    fn resolution_on_random_graphs(
        edges in proptest::collection::btree_set((0usize..7, 0usize..7), 0..14),
        enabled in proptest::collection::btree_set(0usize..7, 1..4),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let name = |i: usize| format!("s{i}");
        let mut reqs: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for (a, b) in &edges {
            reqs.entry(*a).or_default().insert(*b);
        }
        for i in 0..7 {
            let mut toml = String::from("version = \"1.0.0\"\n[requires]\n");
            for d in reqs.get(&i).into_iter().flatten() {
                toml.push_str(&format!("{} = \"^1\"\n", name(*d)));
            }
            common::skill(tmp.path(), &name(i), Some(&toml));
        }
        let catalog = Catalog::load(&[Source::user(tmp.path())]);
        let wanted: Vec<String> = enabled.iter().map(|i| name(*i)).collect();
        match catalog.resolve(&wanted) {
            Ok(r) => {
                let pos: BTreeMap<&str, usize> =
                    r.order.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
                prop_assert_eq!(pos.len(), r.order.len(), "no skill twice");
                // Reachable set.
                let mut reach = BTreeSet::new();
                let mut stack: Vec<usize> = enabled.iter().copied().collect();
                while let Some(n) = stack.pop() {
                    if reach.insert(n) {
                        stack.extend(reqs.get(&n).into_iter().flatten().copied());
                    }
                }
                let names: BTreeSet<String> = reach.iter().map(|i| name(*i)).collect();
                let got: BTreeSet<String> = r.order.iter().cloned().collect();
                prop_assert_eq!(got, names);
                for (a, b) in &edges {
                    if let (Some(pa), Some(pb)) = (pos.get(name(*a).as_str()), pos.get(name(*b).as_str())) {
                        prop_assert!(pb < pa, "{} requires {} but comes first", a, b);
                    }
                }
                // Same input, same answer.
                prop_assert_eq!(catalog.resolve(&wanted).unwrap(), r);
            }
            Err(ResolveError::Cycle { path }) => {
                prop_assert!(path.len() >= 2);
                prop_assert_eq!(path.first(), path.last());
                for w in path.windows(2) {
                    let a: usize = w[0][1..].parse().unwrap();
                    let b: usize = w[1][1..].parse().unwrap();
                    prop_assert!(edges.contains(&(a, b)), "{:?} is not an edge of {:?}", w, edges);
                }
            }
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }
}
