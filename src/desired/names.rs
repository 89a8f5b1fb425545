//! Names derived from a tenant: bucket, key alias, IAM role. They include a hash of the cluster
//! name and the tenant's UID, so a tenant deleted and re-created under the same name (possibly
//! by another healthcare group) never receives the old tenant's bucket, key or role.

use crate::api::ImagingTenant;
use crate::config::Settings;

/// ARN of the tenant's IAM role (deterministic: the role name derives from the tenant UID).
pub fn role_arn(tenant: &ImagingTenant, settings: &Settings) -> String {
    let _ = (tenant, settings);
    todo!("derived role ARN")
}
