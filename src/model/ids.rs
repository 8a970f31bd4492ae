//! Typed identifiers: each value is checked once, when the model is built, and is valid wherever it travels.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Why a value is not a valid identifier, phrased to follow "is not a valid …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidId {
    pub reason: String,
}

fn invalid(reason: impl Into<String>) -> InvalidId {
    InvalidId { reason: reason.into() }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// An AWS region name such as `us-east-1`.
    Region
);
string_id!(
    /// A 12-digit AWS account ID.
    AccountId
);
string_id!(
    /// An AMI ID such as `ami-0123456789abcdef0`.
    AmiId
);
string_id!(
    /// A valid S3 bucket name (the global name, not an ARN).
    BucketName
);
string_id!(
    /// An ARN, checked for its shape (`arn:partition:service:region:account:resource`).
    Arn
);
string_id!(
    /// An AWS Organizations organization ARN.
    OrganizationArn
);
string_id!(
    /// An AWS Organizations organizational-unit ARN.
    OuArn
);

/// Regions imagectl knows. A new region needs a release: a typo must not pass as a region nobody has.
pub const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

static ACCOUNT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9]{12}$").unwrap());
static AMI: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$").unwrap());
static BUCKET: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$").unwrap());
static IPV4: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$").unwrap());
static ARN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^arn:(aws|aws-cn|aws-us-gov):[a-z0-9-]+:[a-z0-9-]*:([0-9]{12}|aws)?:.+$").unwrap());
// AWS documents o-[a-z0-9]{10,32}; shorter IDs are accepted so that examples stay readable, AWS checks the rest.
static ORGANIZATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^arn:(aws|aws-cn|aws-us-gov):organizations::[0-9]{12}:organization/o-[a-z0-9]{4,32}$").unwrap()
});
static OU: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^arn:(aws|aws-cn|aws-us-gov):organizations::[0-9]{12}:ou/o-[a-z0-9]{4,32}/ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}$",
    )
    .unwrap()
});
static AMI_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9()\[\] ./'@_-]+$").unwrap());

impl Region {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if REGIONS.contains(&s) {
            return Ok(Region(s.to_owned()));
        }
        Err(invalid(match suggest(s, REGIONS) {
            Some(near) => format!("`{s}` is not a known AWS region; did you mean {near}?"),
            None => format!("`{s}` is not a known AWS region (e.g. us-east-1, eu-west-1)"),
        }))
    }
}

/// What a misspelled `word` most likely meant, as `X` or `X, Y or Z`: the candidates containing it (`Image` →
/// `PrivateImage`) or within two edits (`eu-wset-2` → `eu-west-2`), the nearest ones all named (`eu-west-4` is as near
/// to eu-west-1 as to eu-west-3, and picking one would be a guess).
pub fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    let distances: Vec<(usize, &str)> = candidates
        .iter()
        .map(|c| {
            let candidate = c.to_ascii_lowercase();
            let distance =
                if lower.len() >= 4 && candidate.contains(&lower) { 1 } else { edit_distance(&lower, &candidate) };
            (distance, *c)
        })
        .filter(|(distance, _)| *distance <= 2)
        .collect();
    let best = distances.iter().map(|(distance, _)| *distance).min()?;
    let nearest: Vec<&str> = distances.iter().filter(|(d, _)| *d == best).map(|(_, c)| *c).collect();
    Some(match nearest.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => return None,
    })
}

/// Levenshtein distance; the words compared are short, so the quadratic table is cheap.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if ACCOUNT.is_match(s) {
            Ok(AccountId(s.to_owned()))
        } else {
            Err(invalid(format!("`{s}` is not an AWS account ID: expected exactly 12 digits (quote it in YAML)")))
        }
    }
}

impl AmiId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if AMI.is_match(s) {
            Ok(AmiId(s.to_owned()))
        } else {
            Err(invalid(format!("`{s}` is not an AMI ID: expected ami- followed by 8 or 17 hex digits")))
        }
    }
}

impl BucketName {
    /// The S3 general-purpose bucket naming rules.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let rule = if !(3..=63).contains(&s.len()) {
            Some("must be 3 to 63 characters long")
        } else if !BUCKET.is_match(s) {
            Some("may hold only lowercase letters, digits, dots and hyphens, and must begin and end with a letter or digit")
        } else if s.contains("..") || s.contains(".-") || s.contains("-.") {
            Some("must not have two adjacent dots or a dot next to a hyphen")
        } else if IPV4.is_match(s) {
            Some("must not be formatted as an IP address")
        } else if s.starts_with("xn--") || s.starts_with("sthree-") || s.starts_with("amzn-s3-demo-") {
            Some("must not begin with xn--, sthree- or amzn-s3-demo-")
        } else if s.ends_with("-s3alias") || s.ends_with("--ol-s3") || s.ends_with(".mrap") || s.ends_with("--x-s3") {
            Some("must not end with -s3alias, --ol-s3, .mrap or --x-s3")
        } else {
            None
        };
        match rule {
            None => Ok(BucketName(s.to_owned())),
            Some(rule) => Err(invalid(format!("`{s}` is not a valid S3 bucket name: a bucket name {rule}"))),
        }
    }
}

impl Arn {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if ARN.is_match(s) {
            Ok(Arn(s.to_owned()))
        } else {
            Err(invalid(format!("`{s}` is not an ARN: expected arn:aws:<service>:<region>:<account>:<resource>")))
        }
    }

    /// The service part: `iam`, `s3`, `sns` …
    pub fn service(&self) -> &str {
        self.0.split(':').nth(2).unwrap_or_default()
    }

    /// The region part; empty for global services.
    pub fn region(&self) -> &str {
        self.0.split(':').nth(3).unwrap_or_default()
    }

    /// The resource part, after the fifth colon (`role/name`, `bucket`, `topic`).
    pub fn resource(&self) -> &str {
        self.0.splitn(6, ':').nth(5).unwrap_or_default()
    }

    /// The last path segment of the resource: the name of a role, profile, topic or bucket.
    pub fn resource_name(&self) -> &str {
        self.resource().rsplit(['/', ':']).next().unwrap_or_default()
    }
}

impl OrganizationArn {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if ORGANIZATION.is_match(s) {
            Ok(OrganizationArn(s.to_owned()))
        } else {
            Err(invalid(format!(
                "`{s}` is not an organization ARN: expected arn:aws:organizations::<management account>:organization/o-<id>"
            )))
        }
    }
}

impl OuArn {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if OU.is_match(s) {
            Ok(OuArn(s.to_owned()))
        } else {
            Err(invalid(format!(
                "`{s}` is not an organizational unit ARN: expected arn:aws:organizations::<management account>:ou/o-<org id>/ou-<root>-<id>"
            )))
        }
    }
}

/// Checks an AMI name as EC2 accepts it: 3–128 characters of letters, digits and `( ) [ ] . / - ' @ _` or space.
pub fn check_ami_name(name: &str, room_for_suffix: usize) -> Result<(), InvalidId> {
    let max = 128 - room_for_suffix;
    if name.len() < 3 || name.len() > max {
        return Err(invalid(format!(
            "`{name}` is {} characters long; an AMI name must be 3 to 128 characters{}",
            name.len(),
            if room_for_suffix > 0 {
                format!(", and imagectl appends up to {room_for_suffix}, so at most {max} here")
            } else {
                String::new()
            }
        )));
    }
    if !AMI_NAME.is_match(name) {
        return Err(invalid(format!(
            "`{name}` has characters EC2 does not accept in an AMI name: use letters, digits, spaces and ( ) [ ] . / - ' @ _"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["golden-images-build-logs", "a.b-c", "abc"] {
            assert!(BucketName::parse(good).is_ok(), "{good}");
        }
        for bad in ["ab", "Golden", "-abc", "abc-", "a..b", "192.168.1.1", "xn--abc", "abc-s3alias", "a_b"] {
            assert!(BucketName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arn_parts() {
        let arn = Arn::parse("arn:aws:iam::123456789012:role/service/build").unwrap();
        assert_eq!(arn.service(), "iam");
        assert_eq!(arn.region(), "");
        assert_eq!(arn.resource_name(), "build");
        let topic = Arn::parse("arn:aws:sns:us-east-1:123456789012:events").unwrap();
        assert_eq!(topic.resource_name(), "events");
        assert!(Arn::parse("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore").is_ok());
        assert!(Arn::parse("role/x").is_err());
    }

    #[test]
    fn organization_arns() {
        assert!(OuArn::parse("arn:aws:organizations::123456789012:ou/o-abc123/ou-ab12-cdef3456").is_ok());
        assert!(OuArn::parse("arn:aws:organizations::123456789012:ou/o-abc123").is_err());
        assert!(OrganizationArn::parse("arn:aws:organizations::123456789012:organization/o-abc123def4").is_ok());
        assert!(OrganizationArn::parse("arn:aws:organizations::12345:organization/o-abc123def4").is_err());
    }

    #[test]
    fn ids() {
        assert!(AmiId::parse("ami-0123456789abcdef0").is_ok());
        assert!(AmiId::parse("ami-12345678").is_ok());
        assert!(AmiId::parse("ami-xyz").is_err());
        assert!(AccountId::parse("111122223333").is_ok());
        assert!(AccountId::parse("1111222233").is_err());
        assert!(Region::parse("eu-west-1").is_ok());
        assert!(Region::parse("eu-west-9").is_err());
        assert!(Region::parse("eu-wset-2").unwrap_err().reason.contains("did you mean eu-west-2?"));
        assert_eq!(suggest("Image", &["Role", "PrivateImage"]).as_deref(), Some("PrivateImage"));
        assert_eq!(suggest("bucket", &["Role", "Bucket"]).as_deref(), Some("Bucket"));
        assert_eq!(suggest("us-east-7", REGIONS).as_deref(), Some("us-east-1 or us-east-2"));
        assert_eq!(suggest("xyz", &["Role", "Bucket"]), None);
        assert!(check_ami_name("web-base", 20).is_ok());
        assert!(check_ami_name("ab", 0).is_err());
        assert!(check_ami_name("web#base", 0).is_err());
    }
}
