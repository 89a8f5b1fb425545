//! Names derived from a tenant: bucket, key alias, IAM role. They include a hash of the cluster
//! name and the tenant's UID, so a tenant deleted and re-created under the same name (possibly
//! by another healthcare group) never receives the old tenant's bucket, key or role.
//!
//! Every name is built from sanitised, truncated parts, so it is valid for AWS whatever the
//! operator's flags say (the property tests below check that over arbitrary inputs).

use sha2::{Digest, Sha256};

use crate::api::ImagingTenant;
use crate::config::Settings;

/// IAM path of every tenant role: lets the operator's own IAM policy name them with one pattern.
pub(crate) const ROLE_PATH: &str = "/imaging-tenants/";
/// First part of every tenant role name.
pub(crate) const ROLE_PREFIX: &str = "imaging-";
/// First part of every key alias.
pub(crate) const ALIAS_PREFIX: &str = "alias/imaging/";
/// Shown instead of the hash when the tenant has no UID yet (`plan` works offline).
pub(crate) const HASH_PLACEHOLDER: &str = "<uid-hash>";

const BUCKET_MAX: usize = 63;
const BUCKET_PREFIX_MAX: usize = 24;
const ROLE_MAX: usize = 64;
const ALIAS_CLUSTER_MAX: usize = 100;
const ALIAS_TENANT_MAX: usize = 63;
/// Prefixes S3 reserves for its own bucket names.
const RESERVED_BUCKET_PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
/// Suffixes S3 reserves for access points, directory and table buckets, multi-region aliases.
#[cfg(test)]
const RESERVED_BUCKET_SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

/// `<bucket prefix>-<tenant, truncated>-<hash>`.
pub(crate) fn bucket_name(tenant: &ImagingTenant, settings: &Settings) -> String {
    bucket_name_from(&settings.bucket_prefix, tenant.tenant_name(), &tenant_hash(tenant, settings))
}

/// `arn:<partition>:s3:::<bucket>`.
pub(crate) fn bucket_arn(tenant: &ImagingTenant, settings: &Settings) -> String {
    format!("arn:{}:s3:::{}", settings.partition, bucket_name(tenant, settings))
}

/// `alias/imaging/<cluster>/<tenant>-<hash>`.
pub(crate) fn key_alias(tenant: &ImagingTenant, settings: &Settings) -> String {
    key_alias_from(&settings.cluster_name, tenant.tenant_name(), &tenant_hash(tenant, settings))
}

/// `imaging-<tenant, truncated>-<hash>`, under the path [`ROLE_PATH`].
pub(crate) fn role_name(tenant: &ImagingTenant, settings: &Settings) -> String {
    role_name_from(tenant.tenant_name(), &tenant_hash(tenant, settings))
}

/// ARN of the tenant's IAM role (deterministic: the role name derives from the tenant UID).
pub(crate) fn role_arn(tenant: &ImagingTenant, settings: &Settings) -> String {
    format!("arn:{}:iam::{}:role{}{}", settings.partition, settings.account_id, ROLE_PATH, role_name(tenant, settings))
}

/// Last part of the replica bucket name, the replica key alias and the replication role name.
pub(crate) const REPLICA_SUFFIX: &str = "-dr";
/// Last part of the replication role's name.
pub(crate) const REPLICATION_ROLE_SUFFIX: &str = "-replication";

/// `<bucket prefix>-<tenant, truncated>-<hash>-dr`: the replica bucket, in the replication region.
pub(crate) fn replica_bucket_name(tenant: &ImagingTenant, settings: &Settings) -> String {
    replica_bucket_name_from(&settings.bucket_prefix, tenant.tenant_name(), &tenant_hash(tenant, settings))
}

/// `arn:<partition>:s3:::<replica bucket>`.
pub(crate) fn replica_bucket_arn(tenant: &ImagingTenant, settings: &Settings) -> String {
    format!("arn:{}:s3:::{}", settings.partition, replica_bucket_name(tenant, settings))
}

/// `alias/imaging/<cluster>/<tenant>-<hash>-dr`, in the replication region.
pub(crate) fn replica_key_alias(tenant: &ImagingTenant, settings: &Settings) -> String {
    format!("{}{REPLICA_SUFFIX}", key_alias(tenant, settings))
}

/// `imaging-<tenant, truncated>-<hash>-replication`, under [`ROLE_PATH`]: the role S3 assumes
/// to replicate the tenant's bucket.
pub(crate) fn replication_role_name(tenant: &ImagingTenant, settings: &Settings) -> String {
    replication_role_name_from(tenant.tenant_name(), &tenant_hash(tenant, settings))
}

pub(crate) fn replication_role_arn(tenant: &ImagingTenant, settings: &Settings) -> String {
    format!(
        "arn:{}:iam::{}:role{}{}",
        settings.partition,
        settings.account_id,
        ROLE_PATH,
        replication_role_name(tenant, settings)
    )
}

pub(crate) fn replica_bucket_name_from(prefix: &str, tenant: &str, hash: &str) -> String {
    // The tenant part gives up the room of the suffix; the hash keeps the name unique.
    let source = bucket_name_from(prefix, tenant, hash);
    let room = BUCKET_MAX - REPLICA_SUFFIX.len();
    if source.len() <= room {
        return format!("{source}{REPLICA_SUFFIX}");
    }
    let (head, hash_part) = source.split_at(source.len() - hash.len());
    let head = head.trim_end_matches('-');
    let head = truncate(head, room - 1 - hash_part.len());
    format!("{head}-{hash_part}{REPLICA_SUFFIX}")
}

pub(crate) fn replication_role_name_from(tenant: &str, hash: &str) -> String {
    let source = role_name_from(tenant, hash);
    let room = ROLE_MAX - REPLICATION_ROLE_SUFFIX.len();
    if source.len() <= room {
        return format!("{source}{REPLICATION_ROLE_SUFFIX}");
    }
    let (head, hash_part) = source.split_at(source.len() - hash.len());
    let head = truncate(head.trim_end_matches('-'), room - 1 - hash_part.len());
    format!("{head}-{hash_part}{REPLICATION_ROLE_SUFFIX}")
}

/// Server access logs of the tenant's bucket go under this prefix of the audit bucket: the
/// bucket name, so that logs of a re-created tenant of the same name stay apart.
pub(crate) fn access_log_prefix(tenant: &ImagingTenant, settings: &Settings) -> String {
    format!("{}/", bucket_name(tenant, settings))
}

/// 8 hex digits of sha256(`<cluster>/<tenant uid>`), or [`HASH_PLACEHOLDER`] while the tenant
/// has no UID (offline) or the cluster name is itself a placeholder.
pub(crate) fn tenant_hash(tenant: &ImagingTenant, settings: &Settings) -> String {
    match tenant.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() && !is_placeholder(&settings.cluster_name) => hash_of(&settings.cluster_name, uid),
        _ => HASH_PLACEHOLDER.to_string(),
    }
}

/// 8 hex digits of sha256(`<cluster>/<uid>`).
pub(crate) fn hash_of(cluster: &str, uid: &str) -> String {
    let digest = Sha256::digest(format!("{cluster}/{uid}").as_bytes());
    hex::encode(&digest[..4])
}

pub(crate) fn bucket_name_from(prefix: &str, tenant: &str, hash: &str) -> String {
    let mut prefix = match truncate(&dns_piece(prefix), BUCKET_PREFIX_MAX) {
        // The prefix is what keeps a tenant name such as `sthree-x` from a reserved prefix.
        p if p.is_empty() => "imaging".to_string(),
        p => p,
    };
    if RESERVED_BUCKET_PREFIXES.iter().any(|reserved| format!("{prefix}-").starts_with(reserved)) {
        // Deterministic and still recognisable; `validate_bucket_prefix` rejects such a flag.
        prefix = format!("imaging-{prefix}");
    }
    let tenant = match dns_piece(tenant) {
        t if t.is_empty() => "tenant".to_string(),
        t => t,
    };
    let tenant = truncate(&tenant, BUCKET_MAX - (prefix.len() + 1) - 1 - hash.len().min(8));
    format!("{prefix}-{tenant}-{hash}")
}

pub(crate) fn key_alias_from(cluster: &str, tenant: &str, hash: &str) -> String {
    let cluster = alias_cluster(cluster);
    let tenant = match truncate(&alias_piece(tenant), ALIAS_TENANT_MAX) {
        t if t.is_empty() => "tenant".to_string(),
        t => t,
    };
    format!("{ALIAS_PREFIX}{cluster}/{tenant}-{hash}")
}

/// The cluster's part of its key aliases: `alias/imaging/<this>/...`. The operator's IAM policy
/// names the aliases of one cluster with it.
pub(crate) fn alias_cluster(cluster: &str) -> String {
    if is_placeholder(cluster) {
        cluster.to_string()
    } else {
        match truncate(&alias_piece(cluster), ALIAS_CLUSTER_MAX) {
            c if c.is_empty() => "cluster".to_string(),
            c => c,
        }
    }
}

pub(crate) fn role_name_from(tenant: &str, hash: &str) -> String {
    let tenant = match dns_piece(tenant) {
        t if t.is_empty() => "tenant".to_string(),
        t => t,
    };
    let tenant = truncate(&tenant, ROLE_MAX - ROLE_PREFIX.len() - 1 - hash.len().min(8));
    format!("{ROLE_PREFIX}{tenant}-{hash}")
}

/// Whether S3 accepts `name` for a general purpose bucket and it is one this operator would
/// make: 3–63 lowercase letters, digits and single hyphens, starting and ending with a letter or
/// digit, no reserved prefix or suffix. (Dots are valid in S3 but never used here, so no name
/// can look like an IP address.)
#[cfg(test)]
fn is_valid_bucket_name(name: &str) -> bool {
    (3..=BUCKET_MAX).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("--")
        && !RESERVED_BUCKET_PREFIXES.iter().any(|p| name.starts_with(p))
        && !RESERVED_BUCKET_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Checks the `--bucket-prefix` flag: names stay valid whatever it is, but a prefix that would be
/// rewritten is better refused at start-up than silently changed.
pub(crate) fn validate_bucket_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > BUCKET_PREFIX_MAX {
        return Err(format!("--bucket-prefix must be at most {BUCKET_PREFIX_MAX} characters"));
    }
    if dns_piece(prefix) != prefix {
        return Err("--bucket-prefix must be lowercase letters, digits and single hyphens, starting and ending with a letter or digit".into());
    }
    if RESERVED_BUCKET_PREFIXES.iter().any(|reserved| format!("{prefix}-").starts_with(reserved)) {
        return Err(format!(
            "--bucket-prefix must not start with one of the prefixes S3 reserves: {}",
            RESERVED_BUCKET_PREFIXES.join(", ")
        ));
    }
    Ok(())
}

fn is_placeholder(value: &str) -> bool {
    value.starts_with('<') && value.ends_with('>')
}

/// Lowercase letters, digits and single hyphens, no hyphen at either end.
fn dns_piece(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Characters KMS allows in alias names (letters, digits, `_`, `-`), others become `-`; `/`
/// is kept out so the alias has exactly the structure we give it.
fn alias_piece(raw: &str) -> String {
    let out: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect();
    out.trim_matches('-').to_string()
}

/// At most `max` characters (all ASCII here), without a trailing hyphen.
fn truncate(piece: &str, max: usize) -> String {
    piece[..piece.len().min(max)].trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImagingTenantSpec;
    use proptest::prelude::*;

    fn tenant(name: &str, uid: Option<&str>) -> ImagingTenant {
        let mut t =
            ImagingTenant::new(name, serde_json::from_value::<ImagingTenantSpec>(serde_json::json!({})).unwrap());
        t.metadata.uid = uid.map(str::to_string);
        t
    }

    fn settings() -> Settings {
        Settings {
            cluster_name: "prod-1".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            bucket_prefix: "acme-img".into(),
            ..Settings::placeholder()
        }
    }

    #[test]
    fn names_follow_the_documented_shapes() {
        let t = tenant("group-a", Some("6f1c3a52-5a3e-4c1e-9d7a-0b6a0c2f1e11"));
        let s = settings();
        let hash = hash_of("prod-1", "6f1c3a52-5a3e-4c1e-9d7a-0b6a0c2f1e11");
        assert_eq!(hash.len(), 8);
        assert_eq!(bucket_name(&t, &s), format!("acme-img-group-a-{hash}"));
        assert_eq!(key_alias(&t, &s), format!("alias/imaging/prod-1/group-a-{hash}"));
        assert_eq!(role_name(&t, &s), format!("imaging-group-a-{hash}"));
        assert_eq!(role_arn(&t, &s), format!("arn:aws:iam::123456789012:role/imaging-tenants/imaging-group-a-{hash}"));
        assert_eq!(replica_bucket_name(&t, &s), format!("acme-img-group-a-{hash}-dr"));
        assert_eq!(replica_key_alias(&t, &s), format!("alias/imaging/prod-1/group-a-{hash}-dr"));
        assert_eq!(replication_role_name(&t, &s), format!("imaging-group-a-{hash}-replication"));
    }

    #[test]
    fn different_uids_give_different_names() {
        let s = settings();
        let a = tenant("group-a", Some("11111111-1111-1111-1111-111111111111"));
        let b = tenant("group-a", Some("22222222-2222-2222-2222-222222222222"));
        assert_ne!(bucket_name(&a, &s), bucket_name(&b, &s));
        assert_ne!(key_alias(&a, &s), key_alias(&b, &s));
        assert_ne!(role_name(&a, &s), role_name(&b, &s));
    }

    #[test]
    fn the_same_uid_in_another_cluster_gives_other_names() {
        let t = tenant("group-a", Some("11111111-1111-1111-1111-111111111111"));
        let other = Settings { cluster_name: "prod-2".into(), ..settings() };
        assert_ne!(bucket_name(&t, &settings()), bucket_name(&t, &other));
    }

    #[test]
    fn offline_names_show_a_placeholder_instead_of_the_hash() {
        let t = tenant("group-a", None);
        assert_eq!(bucket_name(&t, &settings()), "acme-img-group-a-<uid-hash>");
        let t = tenant("group-a", Some("u"));
        assert_eq!(key_alias(&t, &Settings::placeholder()), "alias/imaging/<cluster-name>/group-a-<uid-hash>");
    }

    #[test]
    fn a_reserved_prefix_is_refused_and_still_yields_a_valid_name() {
        assert!(validate_bucket_prefix("sthree").is_err());
        assert!(validate_bucket_prefix("amzn-s3-demo").is_err());
        assert!(validate_bucket_prefix("Acme").is_err());
        assert!(validate_bucket_prefix("acme-img").is_ok());
        let name = bucket_name_from("sthree", "group-a", "0123abcd");
        assert!(is_valid_bucket_name(&name), "{name}");
        let name = bucket_name_from("xn", "-group-a", "0123abcd");
        assert!(is_valid_bucket_name(&name), "{name}");
    }

    #[test]
    fn the_validity_check_knows_the_s3_rules() {
        for bad in [
            "ab",
            "Abc",
            "a_b",
            "-abc",
            "abc-",
            "xn--abc",
            "sthree-abc",
            "amzn-s3-demo-x",
            "abc-s3alias",
            "abc--ol-s3",
            "abc--x-s3",
            "abc--table-s3",
            "192.168.1.1",
        ] {
            assert!(!is_valid_bucket_name(bad), "{bad}");
        }
        assert!(is_valid_bucket_name(&"a".repeat(63)));
        assert!(!is_valid_bucket_name(&"a".repeat(64)));
    }

    fn tenant_names() -> impl Strategy<Value = String> {
        // DNS-1123 labels as the CRD admits them: at most 40 characters.
        "[a-z]([-a-z0-9]{0,38}[a-z0-9])?"
    }

    proptest! {
        #[test]
        fn bucket_names_are_always_valid(
            prefix in "\\PC{0,40}",
            tenant in tenant_names(),
            cluster in "\\PC{0,80}",
            uid in "[0-9a-f-]{36}",
        ) {
            let hash = hash_of(&cluster, &uid);
            let name = bucket_name_from(&prefix, &tenant, &hash);
            prop_assert!(is_valid_bucket_name(&name), "{name:?}");
            let suffix = format!("-{}", hash);
            prop_assert!(name.ends_with(&suffix), "{}", name);
        }

        #[test]
        fn replica_names_are_always_valid_and_never_a_source_name(
            prefix in "\\PC{0,40}",
            tenant in tenant_names(),
            uid in "[0-9a-f-]{36}",
        ) {
            let hash = hash_of("prod-1", &uid);
            let replica = replica_bucket_name_from(&prefix, &tenant, &hash);
            prop_assert!(is_valid_bucket_name(&replica), "{replica:?}");
            prop_assert!(replica.ends_with(&format!("-{hash}{REPLICA_SUFFIX}")), "{replica}");
            prop_assert_ne!(&replica, &bucket_name_from(&prefix, &tenant, &hash));
            let role = replication_role_name_from(&tenant, &hash);
            prop_assert!(role.len() <= 64, "{role}");
            prop_assert!(role.ends_with(&format!("-{hash}{REPLICATION_ROLE_SUFFIX}")), "{role}");
            prop_assert!(role.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)), "{role}");
        }

        #[test]
        fn a_valid_prefix_is_kept_whole(prefix in "[a-z0-9]([a-z0-9]|-[a-z0-9]){0,10}", tenant in tenant_names()) {
            prop_assume!(validate_bucket_prefix(&prefix).is_ok());
            let name = bucket_name_from(&prefix, &tenant, "0123abcd");
            prop_assert!(name.starts_with(&format!("{prefix}-")), "{name}");
        }

        #[test]
        fn aliases_are_bounded_and_use_allowed_characters(
            cluster in "\\PC{0,300}",
            tenant in tenant_names(),
            uid in "[0-9a-f-]{36}",
        ) {
            let alias = key_alias_from(&cluster, &tenant, &hash_of(&cluster, &uid));
            prop_assert!(alias.len() <= 256, "{}", alias.len());
            prop_assert!(alias.starts_with(ALIAS_PREFIX) && !alias.starts_with("alias/aws/"));
            prop_assert!(alias.chars().all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c)), "{alias}");
            prop_assert_eq!(alias.matches('/').count(), 3);
            prop_assert!(!alias.contains("//"));
        }

        #[test]
        fn role_names_are_bounded_and_use_allowed_characters(tenant in "\\PC{0,200}", uid in "[0-9a-f-]{36}") {
            let name = role_name_from(&tenant, &hash_of("c", &uid));
            prop_assert!(name.len() <= 64 && name.len() > ROLE_PREFIX.len());
            prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)), "{name}");
        }

        #[test]
        fn names_differ_between_uids(
            tenant in tenant_names(),
            a in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            b in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ) {
            prop_assume!(a != b);
            let (ha, hb) = (hash_of("prod-1", &a), hash_of("prod-1", &b));
            // 32 bits of hash: a collision is possible in principle, vanishingly rare here.
            prop_assume!(ha != hb);
            prop_assert_ne!(bucket_name_from("acme", &tenant, &ha), bucket_name_from("acme", &tenant, &hb));
            prop_assert_ne!(role_name_from(&tenant, &ha), role_name_from(&tenant, &hb));
            prop_assert_ne!(key_alias_from("prod-1", &tenant, &ha), key_alias_from("prod-1", &tenant, &hb));
        }
    }
}
