//! The node payload stored in Raft membership.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A replica as the membership knows it: the base URL its peers and forwarded client
/// requests reach it at (for example `http://10.0.0.5:7001`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub url: String,
}

impl Member {
    pub fn new(url: impl Into<String>) -> Self {
        let url: String = url.into();
        Self {
            url: url.trim_end_matches('/').to_owned(),
        }
    }

    /// Parses a member URL: `http://` or `https://` with a host, no trailing slash kept.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(format!(
                "{url:?} must be an http:// or https:// URL with a host"
            ));
        }
        if parsed.path() != "/" && !parsed.path().is_empty() || parsed.query().is_some() {
            return Err(format!(
                "{url:?} must be a base URL without a path or query"
            ));
        }
        Ok(Self::new(url))
    }

    /// `url` joined with an absolute path.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_urls_are_checked() {
        assert_eq!(
            Member::parse("http://10.0.0.1:7001/").unwrap().url,
            "http://10.0.0.1:7001"
        );
        for bad in [
            "",
            "10.0.0.1:7001",
            "ftp://a",
            "http://a/x",
            "http://a?b=1",
            "http://",
        ] {
            assert!(Member::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
