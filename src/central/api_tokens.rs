//! API tokens: the `SharedAccessSignature` credentials of scripts and factory lines.
//!
//! The token value is returned once, in the answer to its creation. That makes creation
//! non-idempotent from the caller's point of view: if the answer is lost, resending would mint a
//! second value (or fail on the existing id) and the first value is gone either way. So
//! [`Client::create_api_token`] is resent only when the request provably did not take effect.

use super::client::{Call, Client};
use super::error::Error;
use super::models::ApiToken;
use super::pager::{ListOptions, Pager};
use reqwest::Method;

impl Client {
    /// Lists the API tokens (`ApiTokens_List`), every page. Values are never included.
    pub fn list_api_tokens(&self) -> Pager<ApiToken> {
        Pager::new(
            self,
            "ApiTokens_List",
            &["apiTokens"],
            &ListOptions::default(),
            None,
        )
    }

    /// Gets one API token's metadata (`ApiTokens_Get`).
    pub async fn get_api_token(&self, id: &str) -> Result<ApiToken, Error> {
        let op = "ApiTokens_Get";
        let url = self.url(op, &["apiTokens", id], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Creates an API token (`ApiTokens_Create`); the answer's `token` is the only copy of the
    /// value.
    ///
    /// ```no_run
    /// # async fn demo(client: iotc::central::Client) -> Result<(), iotc::central::Error> {
    /// use iotc::central::models::{roles, ApiToken, RoleAssignment};
    /// let req = ApiToken {
    ///     id: None, token: None, expiry: None,
    ///     roles: vec![RoleAssignment { role: roles::OPERATOR.into(), organization: None }],
    /// };
    /// let created = client.create_api_token("factory-line-1", &req).await?;
    /// let value = created.token.expect("returned on creation");
    /// # let _ = value; Ok(()) }
    /// ```
    pub async fn create_api_token(&self, id: &str, token: &ApiToken) -> Result<ApiToken, Error> {
        let op = "ApiTokens_Create";
        let url = self.url(op, &["apiTokens", id], false)?;
        let call = Call::new(op, Method::PUT, url)
            .json(token)?
            .not_idempotent();
        self.json(call).await
    }

    /// Deletes (revokes) an API token (`ApiTokens_Remove`).
    pub async fn delete_api_token(&self, id: &str) -> Result<(), Error> {
        let op = "ApiTokens_Remove";
        let url = self.url(op, &["apiTokens", id], false)?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }
}
