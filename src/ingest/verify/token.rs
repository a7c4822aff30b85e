//! STUB: to be written.

use super::{
    Inbound, OptionError, Outbound, SchemeOptions, Secret, SignError, Verified, Verifier,
    VerifyError,
};

#[derive(Debug)]
pub struct Token {
    _secrets: Vec<Secret>,
}

impl Token {
    pub fn from_options(_o: &SchemeOptions, secrets: Vec<Secret>) -> Result<Self, OptionError> {
        Ok(Self { _secrets: secrets })
    }
}

impl Verifier for Token {
    fn scheme(&self) -> &str {
        "token"
    }
    fn verify(&self, _req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        Err(VerifyError::Mismatch)
    }
    fn sign(&self, _req: &mut Outbound) -> Result<(), SignError> {
        Err(SignError::Unsupported("stub"))
    }
}
