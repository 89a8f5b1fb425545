//! Key material for a throwaway control plane: one CA signs the API server's serving
//! certificate and the client certificates of the admin and of kube-controller-manager; a
//! separate key signs service account tokens.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// Paths of the PEM files written by [`write_pki`].
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub controller_manager_cert: PathBuf,
    pub controller_manager_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
}

/// Names the serving certificate is valid for: loopback, plus the in-cluster names of the
/// `kubernetes` Service so the root CA published into namespaces is coherent.
const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Generates the key material and writes it as PEM files into `dir`.
pub fn write_pki(dir: &Path) -> Result<Pki, String> {
    fn err(what: &'static str) -> impl Fn(rcgen::Error) -> String {
        move |e| format!("generate {what}: {e}")
    }

    let ca_key = KeyPair::generate().map_err(err("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err("CA"))?;
    ca_params.distinguished_name.push(DnType::CommonName, "imaging-tenant-operator test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err("CA"))?;
    let ca = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate().map_err(err("serving key"))?;
    let mut serving_params = CertificateParams::new(SERVING_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(err("serving certificate"))?;
    serving_params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving_params.use_authority_key_identifier_extension = true;
    let serving_cert = serving_params.signed_by(&serving_key, &ca).map_err(err("serving certificate"))?;

    // Organization becomes the Kubernetes group: system:masters bypasses RBAC.
    let admin_key = KeyPair::generate().map_err(err("admin key"))?;
    let mut admin_params = CertificateParams::new(Vec::<String>::new()).map_err(err("admin certificate"))?;
    admin_params.distinguished_name.push(DnType::CommonName, "ito-test-admin");
    admin_params.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin_params.use_authority_key_identifier_extension = true;
    let admin_cert = admin_params.signed_by(&admin_key, &ca).map_err(err("admin certificate"))?;

    // kube-controller-manager as in a real cluster: its own user, which the default RBAC binds to
    // system:kube-controller-manager; its controllers then act as their own ServiceAccounts.
    let controller_manager_key = KeyPair::generate().map_err(err("controller manager key"))?;
    let mut cm_params = CertificateParams::new(Vec::<String>::new()).map_err(err("controller manager certificate"))?;
    cm_params.distinguished_name.push(DnType::CommonName, "system:kube-controller-manager");
    cm_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    cm_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    cm_params.use_authority_key_identifier_extension = true;
    let controller_manager_cert =
        cm_params.signed_by(&controller_manager_key, &ca).map_err(err("controller manager certificate"))?;

    let service_account_key = KeyPair::generate().map_err(err("service account key"))?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        controller_manager_cert: dir.join("controller-manager.crt"),
        controller_manager_key: dir.join("controller-manager.key"),
        service_account_key: dir.join("sa.key"),
        service_account_public_key: dir.join("sa.pub"),
    };
    let files = [
        (&pki.ca_cert, ca_cert.pem()),
        (&pki.serving_cert, serving_cert.pem()),
        (&pki.serving_key, serving_key.serialize_pem()),
        (&pki.admin_cert, admin_cert.pem()),
        (&pki.admin_key, admin_key.serialize_pem()),
        (&pki.controller_manager_cert, controller_manager_cert.pem()),
        (&pki.controller_manager_key, controller_manager_key.serialize_pem()),
        (&pki.service_account_key, service_account_key.serialize_pem()),
        (&pki.service_account_public_key, service_account_key.public_key_pem()),
    ];
    for (path, pem) in files {
        fs::write(path, pem).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(pki)
}
