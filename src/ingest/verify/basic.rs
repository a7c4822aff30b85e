//! STUB: to be written.

use super::{
    Inbound, OptionError, Outbound, SchemeOptions, Secret, SignError, Verified, Verifier,
    VerifyError,
};

#[derive(Debug)]
pub struct Basic {
    _secrets: Vec<Secret>,
}

impl Basic {
    pub fn from_options(_o: &SchemeOptions, secrets: Vec<Secret>) -> Result<Self, OptionError> {
        Ok(Self { _secrets: secrets })
    }
}

impl Verifier for Basic {
    fn scheme(&self) -> &str {
        "basic"
    }
    fn verify(&self, _req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        Err(VerifyError::Mismatch)
    }
    fn sign(&self, _req: &mut Outbound) -> Result<(), SignError> {
        Err(SignError::Unsupported("stub"))
    }
}
