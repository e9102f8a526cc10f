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
