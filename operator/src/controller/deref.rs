//! Dereference: the reads a reconcile makes before deciding anything — the Kafka credentials in Secrets (the
//! operator's admin client needs them, the workers get them as `secretKeyRef`s), and the other pipelines.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::Error;
use crate::crd::SecretKeyRef;
use crate::validate::ValidPipeline;

async fn secret_value(secrets: &Api<Secret>, r: &SecretKeyRef) -> Result<String, Error> {
    let secret =
        secrets.get_opt(&r.name).await?.ok_or_else(|| Error::Secret(format!("Secret {} not found", r.name)))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(&r.key)).map(|s| s.clone().into_bytes()))
        .ok_or_else(|| Error::Secret(format!("Secret {} has no key {}", r.name, r.key)))?;
    String::from_utf8(bytes).map_err(|_| Error::Secret(format!("Secret {} key {} is not UTF-8", r.name, r.key)))
}

/// librdkafka properties for the operator's own admin client: bootstrap, security settings with the secrets'
/// contents inline (PEM strings, SASL credentials), and the user's properties.
pub(super) async fn admin_properties(client: &Client, p: &ValidPipeline) -> Result<BTreeMap<String, String>, Error> {
    let kafka = &p.object.spec.kafka;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &p.namespace);
    let mut props = kafka.properties.clone();
    props.insert("bootstrap.servers".to_owned(), kafka.bootstrap_servers.clone());
    if let Some(protocol) = kafka.security_protocol() {
        props.insert("security.protocol".to_owned(), protocol.to_owned());
    }
    if let Some(tls) = &kafka.tls {
        if let Some(ca) = &tls.ca_cert {
            props.insert("ssl.ca.pem".to_owned(), secret_value(&secrets, ca).await?);
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            props.insert("ssl.certificate.pem".to_owned(), secret_value(&secrets, cert).await?);
            props.insert("ssl.key.pem".to_owned(), secret_value(&secrets, key).await?);
        }
    }
    if let Some(sasl) = &kafka.sasl {
        props.insert("sasl.mechanism".to_owned(), sasl.mechanism.as_str().to_owned());
        props.insert("sasl.username".to_owned(), secret_value(&secrets, &sasl.username).await?);
        props.insert("sasl.password".to_owned(), secret_value(&secrets, &sasl.password).await?);
    }
    Ok(props)
}
