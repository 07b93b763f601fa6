//! Writes the development certificates in `certs/`: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, and a second one for
//! `other.test` and `*.other.test` (to exercise SNI), each signed by the CA.
//!
//! DEVELOPMENT ONLY: the private keys are committed to the repository.
//!
//! ```text
//! cargo run --example gen_certs -- certs/
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "certs".into()));
    std::fs::create_dir_all(&dir)?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ringlb development CA (DO NOT TRUST)");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    write(&dir, "ca.pem", &ca.pem())?;
    write(&dir, "ca.key", &ca_key.serialize_pem())?;

    for (stem, names) in [
        ("server", &["localhost", "127.0.0.1"][..]),
        ("other", &["other.test", "*.other.test"][..]),
    ] {
        // rcgen turns names that parse as IP addresses into IP SANs.
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        write(&dir, &format!("{stem}.pem"), &cert.pem())?;
        write(&dir, &format!("{stem}.key"), &key.serialize_pem())?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    println!("wrote {}", path.display());
    Ok(())
}
