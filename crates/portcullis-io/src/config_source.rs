//! The configuration `--config` names, as read from disk: one file, or a directory whose `*.yaml` files are
//! fragments of one configuration ([`ConfigBytes`]); its digest (what the reloader compares and
//! `portcullis_config_info{hash}` shows), its newest modification time (the reloader's quiet period), and
//! its text for the engine ([`ConfigText::source`]). The engine merges the fragments
//! (`Config::parse_fragments`); this module only reads them.
//!
//! Everything here does I/O; the engine itself never does.

use std::path::{Path, PathBuf};

use portcullis_core::config::{Config, ConfigErrors, Fragment, LoadError, Problem, Source};

/// Reads and parses the configuration `--config` names: a file, or a directory of fragments
/// ([`ConfigBytes::read`]).
pub fn load_config(path: &Path) -> Result<Config, LoadError> {
    if !path.is_dir() {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        return Config::from_file_text(&text);
    }
    let text = read_config_text(path)?;
    Ok(Config::from_source(text.source())?)
}

/// The text of the configuration `--config` names: a file's, or a directory's fragments. A file that is
/// not UTF-8 cannot be read (as ever); a fragment that is not is a problem in that fragment.
pub fn read_config_text(path: &Path) -> Result<ConfigText, LoadError> {
    if !path.is_dir() {
        return std::fs::read_to_string(path)
            .map(ConfigText::File)
            .map_err(|source| LoadError::Read {
                path: path.to_owned(),
                source,
            });
    }
    ConfigBytes::read(path)?
        .into_text()
        .map_err(|problem| LoadError::Invalid(ConfigErrors(vec![problem])))
}

/// What `--config` names, as read from disk: a file's bytes, or a directory's fragments in name order.
///
/// A directory's fragments are the entries at its top level whose names end with `.yaml` and do not start
/// with `.`, that are files or symlinks to files: a mounted Kubernetes ConfigMap's `..data` and
/// `..2026_…` entries are never read, only the `KEY` symlinks into them. Anything else in the directory
/// (a `README.md`, a subdirectory) is left alone, except a `*.yml` file, which is refused: a fragment that
/// was meant to be read and silently is not would leave its routes to the default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigBytes {
    File(Vec<u8>),
    Fragments(Vec<(String, Vec<u8>)>),
}

/// The text of a configuration: what the engine parses ([`Source`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigText {
    File(String),
    Fragments(Vec<Fragment>),
}

// === impl ConfigBytes ===

impl ConfigBytes {
    /// Reads a file, or a directory's fragments (see the type's docs). An empty directory reads as no
    /// fragments (the parse refuses it), so that a reload reports it.
    pub fn read(path: &Path) -> Result<ConfigBytes, LoadError> {
        let fail = |at: &Path| {
            let at = at.to_owned();
            move |source| LoadError::Read { path: at, source }
        };
        if !std::fs::metadata(path).map_err(fail(path))?.is_dir() {
            return std::fs::read(path)
                .map(ConfigBytes::File)
                .map_err(fail(path));
        }
        let mut fragments = Vec::new();
        for (name, file) in fragment_paths(path).map_err(fail(path))? {
            let body = std::fs::read(&file).map_err(fail(&file))?;
            fragments.push((name, body));
        }
        Ok(ConfigBytes::Fragments(fragments))
    }

    /// The SHA-256 the watcher compares and `portcullis_config_info{hash}` shows: of the file's bytes, or
    /// of every fragment's name and content (so an added, removed or renamed fragment changes it).
    pub fn digest(&self) -> [u8; 32] {
        use aws_lc_rs::digest::{Context, SHA256};
        let mut hash = Context::new(&SHA256);
        match self {
            ConfigBytes::File(body) => hash.update(body),
            ConfigBytes::Fragments(fragments) => {
                for (name, body) in fragments {
                    hash.update(&(name.len() as u64).to_be_bytes());
                    hash.update(name.as_bytes());
                    hash.update(&(body.len() as u64).to_be_bytes());
                    hash.update(body);
                }
            }
        }
        let mut digest = [0; 32];
        digest.copy_from_slice(hash.finish().as_ref());
        digest
    }

    /// The text, or the problem that stops it: a file or fragment that is not UTF-8, a `*.yml` fragment,
    /// a directory without fragments.
    pub fn into_text(self) -> Result<ConfigText, Problem> {
        let not_utf8 = |path: String| Problem {
            path,
            message: "not UTF-8 text".to_owned(),
        };
        let fragments = match self {
            ConfigBytes::File(body) => {
                return String::from_utf8(body)
                    .map(ConfigText::File)
                    .map_err(|_| not_utf8(".".to_owned()))
            }
            ConfigBytes::Fragments(fragments) => fragments,
        };
        if fragments.is_empty() {
            return Err(Problem {
                path: ".".to_owned(),
                message: "the directory has no `*.yaml` files (the fragments of the configuration)"
                    .to_owned(),
            });
        }
        fragments
            .into_iter()
            .map(|(name, body)| {
                if !name.ends_with(".yaml") {
                    return Err(Problem {
                        path: format!("{name}: ."),
                        message: "fragments are read from `*.yaml` files only: rename it to `.yaml`, or move it out of the directory".to_owned(),
                    });
                }
                match String::from_utf8(body) {
                    Ok(text) => Ok(Fragment { name, text }),
                    Err(_) => Err(not_utf8(format!("{name}: ."))),
                }
            })
            .collect::<Result<_, _>>()
            .map(ConfigText::Fragments)
    }
}

/// Whether a directory entry of this name is read as a fragment: `*.yaml` (and `*.yml`, to be refused),
/// never a dotfile (a Kubernetes volume's `..data`, a writer's temporary file).
pub fn is_fragment_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// A directory's fragments (and `*.yml` files, refused later), in name order, with their paths.
fn fragment_paths(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_fragment_name(&name) {
            continue;
        }
        let path = entry.path();
        // Follows a symlink: a Kubernetes ConfigMap key is a symlink to `..data/KEY`.
        if std::fs::metadata(&path)?.is_file() {
            found.push((name, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest modification time among what `path` names (a file, or a directory's fragments).
pub fn newest_modification(path: &Path) -> std::io::Result<std::time::SystemTime> {
    if !std::fs::metadata(path)?.is_dir() {
        return std::fs::metadata(path)?.modified();
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for (_, file) in fragment_paths(path)? {
        newest = newest.max(std::fs::metadata(file)?.modified()?);
    }
    Ok(newest)
}

// === impl ConfigText ===

impl ConfigText {
    /// What the engine parses.
    pub fn source(&self) -> Source<'_> {
        match self {
            ConfigText::File(text) => Source::File(text),
            ConfigText::Fragments(fragments) => Source::Fragments(fragments),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragments(list: &[(&str, &str)]) -> ConfigBytes {
        ConfigBytes::Fragments(
            list.iter()
                .map(|(name, text)| ((*name).to_owned(), text.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn the_digest_covers_every_fragments_name_and_content() {
        let base = fragments(&[
            ("00-a.yaml", "mode: enforce\n"),
            ("10-b.yaml", "routes: []\n"),
        ]);
        let digests = [
            base.digest(),
            // Renamed, changed, the content moved from one fragment to the next, added, removed.
            fragments(&[
                ("00-a.yaml", "mode: enforce\n"),
                ("20-b.yaml", "routes: []\n"),
            ])
            .digest(),
            fragments(&[
                ("00-a.yaml", "mode: permissive\n"),
                ("10-b.yaml", "routes: []\n"),
            ])
            .digest(),
            fragments(&[
                ("00-a.yaml", "mode: enforce\nroutes: []\n"),
                ("10-b.yaml", ""),
            ])
            .digest(),
            fragments(&[
                ("00-a.yaml", "mode: enforce\n"),
                ("10-b.yaml", "routes: []\n"),
                ("30-c.yaml", ""),
            ])
            .digest(),
            fragments(&[("00-a.yaml", "mode: enforce\n")]).digest(),
        ];
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(base.digest(), base.clone().digest());
        // A single file's digest is the SHA-256 of its bytes, as it always was.
        let file = ConfigBytes::File(b"mode: enforce\n".to_vec());
        let hex: String = file.digest().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ac17ce3f2bec0ae47dadb95fd2f4991eb473b0ad709214440a55c69e3cd58438"
        );
    }

    #[test]
    fn a_directory_reads_its_fragments_in_name_order_and_its_newest_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::write(path.join("20-b.yaml"), "routes: []\n").unwrap();
        std::fs::write(path.join("00-a.yaml"), "mode: enforce\n").unwrap();
        std::fs::write(path.join(".20-b.yaml.tmp"), "half").unwrap();
        std::fs::write(path.join("notes.txt"), "not read").unwrap();
        std::fs::create_dir(path.join("30-dir.yaml")).unwrap();
        let ConfigBytes::Fragments(read) = ConfigBytes::read(path).unwrap() else {
            panic!("a directory reads as fragments");
        };
        let names: Vec<&str> = read.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["00-a.yaml", "20-b.yaml"]);

        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let new = old + std::time::Duration::from_secs(3600);
        for (name, time) in [("00-a.yaml", new), ("20-b.yaml", old)] {
            std::fs::File::options()
                .write(true)
                .open(path.join(name))
                .unwrap()
                .set_modified(time)
                .unwrap();
        }
        assert_eq!(newest_modification(path).unwrap(), new);

        let empty = tempfile::tempdir().unwrap();
        let problem = ConfigBytes::read(empty.path())
            .unwrap()
            .into_text()
            .unwrap_err();
        assert_eq!(problem.path, ".");
        assert!(problem.message.contains("no `*.yaml` files"), "{problem}");
    }
}
