//! Which parameters are generated from a ring, and which ring.

use rpg_core::{LayerInfo, LayerRegistry};

/// `*` matches any run of characters (including dots); everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Non-trainable state (BatchNorm running statistics): never shared, never
/// counted as parameters, always saved.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

/// Decides which recorded parameters are shared.
///
/// The default follows the paper: every conv/linear weight (a tensor named
/// `*weight` of rank 2 or more) is shared except the first one requested (the
/// stem) and the last one (the classifier); norms, biases and embeddings are
/// never shared. Patterns override it, `unshared` first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharingPolicy {
    /// Names matching any of these are shared (if not matched by `unshared`).
    pub shared: Vec<String>,
    /// Names matching any of these are never shared.
    pub unshared: Vec<String>,
    /// Local rings: a shared layer goes to the ring of the first pattern it
    /// matches. Empty: one global ring.
    pub groups: Vec<String>,
}

impl SharingPolicy {
    /// The paper's policy with one global ring.
    pub fn paper() -> Self {
        Self::default()
    }

    /// Share every rank >= 2 weight, first and last included.
    pub fn all_weights() -> Self {
        Self {
            shared: vec!["*weight".into()],
            ..Self::default()
        }
    }

    /// Applies the policy to recorded `(name, shape)` pairs (buffers already
    /// removed), in the order the model requested them.
    pub fn registry(&self, params: &[(String, Vec<usize>)]) -> candle_core::Result<LayerRegistry> {
        let candidates: Vec<usize> = params
            .iter()
            .enumerate()
            .filter(|(_, (name, shape))| name.ends_with("weight") && shape.len() >= 2)
            .map(|(i, _)| i)
            .collect();
        let (first, last) = (candidates.first().copied(), candidates.last().copied());
        let mut registry = LayerRegistry::new();
        for (i, (name, shape)) in params.iter().enumerate() {
            let matches = |patterns: &[String]| patterns.iter().any(|p| glob_match(p, name));
            let shared = if matches(&self.unshared) {
                false
            } else if matches(&self.shared) {
                shape.len() >= 2
            } else {
                candidates.contains(&i) && Some(i) != first && Some(i) != last
            };
            let group = if shared && !self.groups.is_empty() {
                match self.groups.iter().position(|p| glob_match(p, name)) {
                    Some(g) => g,
                    None => candle_core::bail!(
                        "shared parameter `{name}` matches none of the ring-group patterns {:?}",
                        self.groups
                    ),
                }
            } else {
                0
            };
            registry
                .push(LayerInfo {
                    name: name.clone(),
                    shape: shape.clone(),
                    shared,
                    group,
                })
                .map_err(candle_core::Error::wrap)?;
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob_match("layer1.*", "layer1.0.conv1.weight"));
        assert!(glob_match("*weight", "fc.weight"));
        assert!(glob_match("*.conv*.weight", "layer2.1.conv2.weight"));
        assert!(!glob_match("layer1.*", "layer2.0.conv1.weight"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    fn params() -> Vec<(String, Vec<usize>)> {
        [
            ("conv1.weight", vec![16, 3, 3, 3]),
            ("bn1.weight", vec![16]),
            ("layer1.0.conv1.weight", vec![16, 16, 3, 3]),
            ("layer2.0.conv1.weight", vec![32, 16, 3, 3]),
            ("fc.weight", vec![10, 32]),
            ("fc.bias", vec![10]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect()
    }

    #[test]
    fn paper_policy_skips_stem_classifier_norms_and_biases() {
        let r = SharingPolicy::paper().registry(&params()).unwrap();
        let shared: Vec<&str> = r.shared().map(|l| l.name.as_str()).collect();
        assert_eq!(shared, ["layer1.0.conv1.weight", "layer2.0.conv1.weight"]);
    }

    #[test]
    fn patterns_override_and_groups_split_rings() {
        let policy = SharingPolicy {
            shared: vec!["fc.weight".into()],
            unshared: vec!["layer1.*".into()],
            groups: vec!["layer*".into(), "fc.*".into()],
        };
        let r = policy.registry(&params()).unwrap();
        let shared: Vec<(&str, usize)> = r.shared().map(|l| (l.name.as_str(), l.group)).collect();
        assert_eq!(shared, [("layer2.0.conv1.weight", 0), ("fc.weight", 1)]);
        let bad = SharingPolicy {
            groups: vec!["layer1.*".into()],
            ..SharingPolicy::paper()
        };
        assert!(bad.registry(&params()).is_err());
    }
}
