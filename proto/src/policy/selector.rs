//! Kubernetes label selectors: `matchLabels` and `matchExpressions` (`In`, `NotIn`,
//! `Exists`, `DoesNotExist`), all terms ANDed; the empty selector matches everything.

use std::collections::BTreeMap;

/// A label set (key to value).
pub type Labels = BTreeMap<String, String>;

/// The operator of one `matchExpressions` term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Operator {
    /// The label is present with one of the values.
    In,
    /// The label is absent, or present with none of the values.
    NotIn,
    /// The label is present (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl Operator {
    /// Parses the API's spelling (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "In" => Self::In,
            "NotIn" => Self::NotIn,
            "Exists" => Self::Exists,
            "DoesNotExist" => Self::DoesNotExist,
            _ => return None,
        })
    }
}

/// One `matchExpressions` term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the key is tested.
    pub operator: Operator,
    /// The values for `In`/`NotIn` (ignored otherwise).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this term.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector; the default (empty) one matches every label set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Selector {
    /// `matchLabels`: each key present with exactly this value.
    pub match_labels: Labels,
    /// `matchExpressions`: each term satisfied.
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches everything (`{}`).
    pub fn all() -> Self {
        Self::default()
    }

    /// A selector of `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: Operator, values: &[&str]) -> Selector {
        Selector {
            match_labels: Labels::new(),
            match_expressions: vec![Requirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::all().matches(&Labels::new()));
        assert!(Selector::all().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = Selector::labels([("app", "web"), ("tier", "front")]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "back")])));
    }

    #[test]
    fn expressions_follow_upstream() {
        let l = labels(&[("env", "prod")]);
        let none = Labels::new();
        assert!(expr("env", Operator::In, &["prod", "dev"]).matches(&l));
        assert!(!expr("env", Operator::In, &["dev"]).matches(&l));
        assert!(!expr("env", Operator::In, &["prod"]).matches(&none));
        assert!(expr("env", Operator::NotIn, &["dev"]).matches(&l));
        assert!(!expr("env", Operator::NotIn, &["prod"]).matches(&l));
        // NotIn matches a pod without the label at all.
        assert!(expr("env", Operator::NotIn, &["prod"]).matches(&none));
        assert!(expr("env", Operator::Exists, &[]).matches(&l));
        assert!(!expr("env", Operator::Exists, &[]).matches(&none));
        assert!(expr("env", Operator::DoesNotExist, &[]).matches(&none));
        assert!(!expr("env", Operator::DoesNotExist, &[]).matches(&l));
        assert_eq!(Operator::parse("NotIn"), Some(Operator::NotIn));
        assert_eq!(Operator::parse("notin"), None);
    }
}
