//! The runtime: everything a check reads, built from one validated [`Config`] — the providers with their
//! caches and key sets, the compiled policy, the answer settings. The server holds it behind an
//! `ArcSwap` and reads it once per check, so a new runtime can be swapped in while checks in flight finish
//! on the one they started with. `serve`, `explain` and the tests all build it with [`Runtime::build`].

use std::sync::Arc;

use crate::answer::AnswerSettings;
use crate::authorizer::{Authorizer, Verdict};
use crate::config::{Config, ConfigErrors, IdentityTokenConfig, Origins, Problem, Source, Sources};
use crate::decision_log::DecisionLog;
use crate::env::Env;
use crate::identity_token::IdentityTokens;
use crate::policy::{Policy, ProviderInfo};
use crate::providers::Providers;
use crate::request::RequestView;
use crate::resources::Resources;

/// One configuration, ready to decide.
pub struct Runtime {
    authorizer: Authorizer,
    answers: AnswerSettings,
    /// The RFC 9728 metadata documents.
    resources: Resources,
    /// Whether a Check may ask for its explanation (`server.allow_explain`).
    allow_explain: bool,
    /// What the identity token signer was built from, so a reload that leaves it alone keeps its keys.
    identity_token_source: Option<(IdentityTokenConfig, [u8; 32])>,
    /// Which decisions are logged (`decision_log`).
    decision_log: DecisionLog,
}

impl Runtime {
    /// Builds the runtime: resolves secrets and reads local key and key files through `env.sources`,
    /// compiles the policy. Every problem comes back with the path of its field. Nothing is fetched yet:
    /// the host's runners refresh the key sets ([`Runtime::key_stores`]) and reload key files
    /// ([`Runtime::api_key_files`]).
    pub fn build(config: &Config, env: &Env) -> Result<Runtime, ConfigErrors> {
        Runtime::build_after(config, env, None)
    }

    /// Builds the runtime that replaces `previous` on reload: what did not change is taken over rather
    /// than built again: unchanged providers with their key sets and caches (see
    /// `Providers::from_config`), the DPoP replay cache, the identity token signer and its keys.
    /// Secrets are resolved again, so a rotated `{file:}` secret is read.
    pub fn build_after(
        config: &Config,
        env: &Env,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, ConfigErrors> {
        let secrets = &env.sources;
        let clock = env.clock.clone();
        let policy = compile_policy(config);
        let providers =
            Providers::from_config(config, env, previous.map(|p| p.authorizer.providers()))
                .map_err(|e| ConfigErrors(vec![e.into_problem()]));
        let identity_token_source = config
            .identity_token
            .as_ref()
            .map(|c| (c.clone(), signing_key_digest(c, secrets)));
        let running_tokens = previous
            .filter(|p| p.identity_token_source.is_some())
            .filter(|p| p.identity_token_source == identity_token_source)
            .and_then(|p| p.answers.identity_tokens_arc());
        let tokens = match running_tokens {
            Some(tokens) => Ok(Some(tokens)),
            None => config
                .identity_token
                .as_ref()
                .map(|c| IdentityTokens::build(c, env).map(Arc::new))
                .transpose(),
        };
        let (policy, providers, tokens) = match (policy, providers, tokens) {
            (Ok(policy), Ok(providers), Ok(tokens)) => (policy, providers, tokens),
            (policy, providers, tokens) => {
                let mut problems = providers.err().map(|e| e.0).unwrap_or_default();
                problems.extend(policy.err().map(|e| e.0).unwrap_or_default());
                problems.extend(tokens.err());
                return Err(ConfigErrors(problems));
            }
        };
        let iat_leeway = config
            .providers
            .iter()
            .filter_map(|p| match &p.kind {
                crate::config::ProviderKind::Jwt(jwt) => i64::try_from(jwt.leeway_seconds).ok(),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let authorizer = Authorizer::new(
            providers,
            policy,
            clock,
            Arc::clone(&env.denylist),
            config.server.max_headers,
            iat_leeway,
        );
        Ok(Runtime {
            authorizer,
            answers: AnswerSettings::new(config, tokens),
            resources: Resources::new(&config.resources),
            allow_explain: config.server.allow_explain,
            identity_token_source,
            decision_log: DecisionLog::new(&config.decision_log),
        })
    }

    /// Decides one request; with `explain`, also says why.
    pub async fn decide(&self, request: &RequestView<'_>, explain: bool) -> Verdict<'_> {
        self.authorizer.decide(request, explain).await
    }

    /// The key sets a host's runner refreshes ([`crate::providers::jwks::KeyStore::refresh`]).
    pub fn key_stores(&self) -> impl Iterator<Item = &Arc<crate::providers::jwks::KeyStore>> {
        self.authorizer.providers().key_stores()
    }

    /// The API key tables read from files, which a host's runner reloads
    /// ([`crate::providers::api_key::ApiKeys::reload`]).
    pub fn api_key_files(&self) -> impl Iterator<Item = &Arc<crate::providers::api_key::ApiKeys>> {
        self.authorizer.providers().api_key_files()
    }

    /// True once every provider can decide.
    pub fn ready(&self) -> bool {
        self.authorizer.ready()
    }

    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    pub fn answers(&self) -> &AnswerSettings {
        &self.answers
    }

    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// The identity token signer, when `identity_token` is configured.
    pub fn identity_tokens(&self) -> Option<&IdentityTokens> {
        self.answers.identity_tokens()
    }

    pub fn decision_log(&self) -> &DecisionLog {
        &self.decision_log
    }

    pub fn allow_explain(&self) -> bool {
        self.allow_explain
    }
}

/// The one loader of `serve`, a reload and `validate-config`: the document parsed leniently
/// ([`Config::parse`], or [`Config::parse_fragments`] for a directory), then [`check`]ed as far as it
/// parsed, so one run reports every problem of a file (a bad enum value hides neither a route nor a missing
/// key set file). With `secrets`, the files and secrets the configuration names are read as `serve` would
/// read them, through `env`'s sources.
pub fn load<'a>(source: impl Into<Source<'a>>, env: Option<&Env>) -> Result<Config, ConfigErrors> {
    load_with(source, env, |_| Vec::new())
}

/// [`load`], with the checks of what only the caller reads (`serve`'s own listener certificate, which a
/// reload never changes) run on the configuration as far as it parsed, in the same list.
pub fn load_with<'a>(
    source: impl Into<Source<'a>>,
    env: Option<&Env>,
    more: impl FnOnce(&Config) -> Vec<Problem>,
) -> Result<Config, ConfigErrors> {
    load_located(source, env, more).map(|(config, _)| config)
}

/// [`load_with`], and where each part of the configuration came from, so that the caller can name the
/// fragment of a warning ([`Origins::locate`]).
pub fn load_located<'a>(
    source: impl Into<Source<'a>>,
    env: Option<&Env>,
    more: impl FnOnce(&Config) -> Vec<Problem>,
) -> Result<(Config, Origins), ConfigErrors> {
    let parsed = Config::parse_source(source.into())?;
    let mut found = check_parsed(&parsed.config, parsed.references_complete, env);
    found.extend(more(&parsed.config));
    let mut problems = parsed.problems.clone();
    for problem in found {
        let problem = parsed.in_document(problem);
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    }
    if problems.is_empty() {
        let origins = parsed.origins().clone();
        Ok((parsed.config, origins))
    } else {
        Err(ConfigErrors(problems))
    }
}

/// What `validate-config` adds to parsing: the policy compiled (once, then dropped) and, with `secrets`,
/// every `{env:}`/`{file:}` reference resolved. Empty means `serve` would start.
pub fn check(config: &Config, env: Option<&Env>) -> Vec<Problem> {
    check_parsed(config, true, env)
}

/// [`check`] of a configuration that may be partial: the policy is compiled only when what it refers to
/// parsed (`references_complete`), else a route naming a provider that failed to parse would be reported
/// a second time, as an unknown provider.
fn check_parsed(config: &Config, references_complete: bool, env: Option<&Env>) -> Vec<Problem> {
    let mut problems = if references_complete {
        compile_policy(config)
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if let Some(env) = env {
        let source = &env.sources;
        if let Some(key) = config
            .identity_token
            .as_ref()
            .and_then(|t| t.signing_key.as_ref())
        {
            if let Err(e) = key.resolve(source) {
                problems.push(Problem {
                    path: "identity_token.signing_key".to_owned(),
                    message: e.to_string(),
                });
            }
        }
        for (i, provider) in config.providers.iter().enumerate() {
            for (field, secret) in provider.kind.secrets() {
                match secret.resolve(source) {
                    Err(e) => problems.push(Problem {
                        path: format!("providers[{i}].{field}"),
                        message: e.to_string(),
                    }),
                    // Long enough for what it keys (the build refuses the same).
                    Ok(value) => {
                        if let Some(message) =
                            crate::providers::secret_too_short(provider, field, value.expose())
                        {
                            problems.push(Problem {
                                path: format!("providers[{i}].{field}"),
                                message,
                            });
                        }
                    }
                }
            }
        }
        // The files a provider reads when it is built (a key set, API keys, a CA): read and parsed now, as
        // `serve` would, one provider at a time so that each provider's problem is reported.
        for (i, provider) in config.providers.iter().enumerate() {
            if provider.kind.build_files().is_empty() {
                continue;
            }
            let mut alone = config.clone();
            alone.providers = vec![provider.clone()];
            alone.policy.routes.clear();
            if let Err(e) = Providers::from_config(&alone, env, None) {
                let mut problem = e.into_problem();
                problem.path = problem
                    .path
                    .replacen("providers[0]", &format!("providers[{i}]"), 1);
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
        let shared = [
            ("revocation.admin_secret", &config.revocation.admin_secret),
            (
                "revocation.auth0_log_stream_secret",
                &config.revocation.auth0_log_stream_secret,
            ),
            ("state.password", &config.state.password),
        ];
        for (path, secret) in shared {
            if let Some(Err(e)) = secret.as_ref().map(|s| s.resolve(source)) {
                problems.push(Problem {
                    path: path.to_owned(),
                    message: e.to_string(),
                });
            }
        }
    }
    problems
}

/// A digest of the identity token's configured signing key (zeros when it has none or it cannot be read:
/// the build reports that).
fn signing_key_digest(config: &IdentityTokenConfig, secrets: &Sources) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    config
        .signing_key
        .as_ref()
        .and_then(|key| key.resolve(secrets).ok())
        .map_or([0; 32], |key| Sha256::digest(key.expose()).into())
}

fn compile_policy(config: &Config) -> Result<Policy, ConfigErrors> {
    let providers: Vec<ProviderInfo<'_>> = config
        .providers
        .iter()
        .map(|p| ProviderInfo {
            name: &p.name,
            challenge_scheme: p.credential.challenge_scheme(),
        })
        .collect();
    Policy::compile(&config.policy, &providers, &config.realm)
}
