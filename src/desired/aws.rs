//! The AWS resources of a tenant: role, key and bucket specs with their policy documents.
