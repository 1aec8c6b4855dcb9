//! The identity token's generated keys on disk: `identity-keys.json` in `identity_token.state_dir`, the
//! directory private to this user (0700) and the file readable by it only (0600), written atomically.

use std::io::Write as _;
use std::path::Path;

use portcullis_core::identity_token::{KeyStorage, KEYS_FILE};

/// The server's [`KeyStorage`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FileKeys;

impl KeyStorage for FileKeys {
    fn load(&self, dir: &Path) -> Result<Option<Vec<u8>>, String> {
        let io = |e: std::io::Error| format!("cannot use `{}`: {e}", dir.display());
        create_private_dir(dir).map_err(io)?;
        let path = dir.join(KEYS_FILE);
        make_private(dir, 0o700, 0o022)?;
        if path.exists() {
            make_private(&path, 0o600, 0o077)?;
        }
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    fn save(&self, dir: &Path, document: &[u8]) -> std::io::Result<()> {
        write_private(&dir.join(KEYS_FILE), document)
    }

    fn generate(&self) -> Option<Vec<u8>> {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).ok()?;
        Some(pair.to_pkcs8v1().ok()?.as_ref().to_vec())
    }
}

/// Makes `path` private when others may write it (a directory: `forbidden` 0o022) or read it (the key
/// file: 0o077): anyone who can replace or read the signing key can mint identities the upstream trusts.
/// Fixed with a warning when this process may change the mode; refused, saying what to do, otherwise.
fn make_private(path: &Path, mode: u32, forbidden: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot use `{}`: {e}", path.display()))?;
    let found = metadata.permissions().mode() & 0o7777;
    if found & forbidden == 0 {
        return Ok(());
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) => {
            tracing::warn!(
                path = %path.display(),
                "identity_token: `{}` had mode {found:o}, open to other users; it is now {mode:o} (rotate the key if others could read it)",
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(format!(
            "`{}` has mode {found:o}, open to other users, and cannot be made private ({e}): anyone who can \
             write or read there can mint identities the upstream trusts. Point identity_token.state_dir at \
             a directory portcullis creates itself (e.g. a subdirectory of a mounted volume)",
            path.display()
        )),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Writes a file readable by its owner only, through a temporary file and a rename (the dev issuer's key,
/// and the identity token's generated keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use portcullis_core::clock::Clock;
    use std::sync::Arc;

    use portcullis_core::config::{IdentityTokenConfig, MemoryFiles, Sources};
    use portcullis_core::env::NoUpstream;
    use portcullis_core::identity_token::IdentityTokens;

    fn config(dir: &Path) -> IdentityTokenConfig {
        serde_yaml_ng::from_str(&format!(
            "{{issuer: 'https://portcullis.test', audience: upstream, state_dir: '{}'}}",
            dir.display()
        ))
        .unwrap()
    }

    fn kids(tokens: &IdentityTokens) -> Vec<String> {
        tokens.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    fn build(cfg: &IdentityTokenConfig, now: i64) -> IdentityTokens {
        let env = portcullis_core::Env::new(
            Clock::manual(now),
            Sources::new(Arc::new(MemoryFiles::default())),
            Arc::new(NoUpstream),
            Arc::new(FileKeys),
        );
        IdentityTokens::build(cfg, &env).unwrap()
    }

    #[test]
    fn an_open_state_dir_or_key_file_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cfg = config(&state);
        build(&cfg, 1_000);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(
            state.join(KEYS_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        build(&cfg, 2_000);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(KEYS_FILE)), 0o600);
    }

    #[test]
    fn a_generated_key_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cfg = config(&state);
        let first = build(&cfg, 1_000);
        let again = build(&cfg, 2_000);
        assert_eq!(kids(&first), kids(&again));
        assert_eq!(kids(&first).len(), 1);
        let mode = std::fs::metadata(state.join(KEYS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}
