//! Devices, their connection credentials and their individual attestation.

use super::client::{Call, Client};
use super::error::Error;
use super::models::{Attestation, Device, DeviceCredentials};
use super::pager::{Accepts, ListOptions, Pager};
use reqwest::Method;

impl Client {
    /// Lists the devices (`Devices_List`). `filter`, `orderby` and `maxpagesize` switch to the
    /// preview api-version.
    ///
    /// ```no_run
    /// # async fn demo(client: iotc::central::Client) -> Result<(), iotc::central::Error> {
    /// use iotc::central::ListOptions;
    /// let opts = ListOptions::default().filter("provisioned eq false").max_page_size(100);
    /// let waiting = client.list_devices(&opts).collect_all().await?;
    /// # let _ = waiting; Ok(()) }
    /// ```
    pub fn list_devices(&self, options: &ListOptions) -> Pager<Device> {
        Pager::new(
            self,
            "Devices_List",
            &["devices"],
            options,
            Some(Accepts::All),
        )
    }

    /// Gets one device (`Devices_Get`).
    pub async fn get_device(&self, id: &str) -> Result<Device, Error> {
        let op = "Devices_Get";
        let url = self.url(op, &["devices", id], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Creates (or replaces) a device (`Devices_Create`).
    pub async fn create_device(&self, id: &str, device: &Device) -> Result<Device, Error> {
        let op = "Devices_Create";
        let url = self.url(op, &["devices", id], false)?;
        self.json(Call::new(op, Method::PUT, url).json(device)?)
            .await
    }

    /// Updates a device with a JSON merge patch (`Devices_Update`).
    pub async fn update_device(
        &self,
        id: &str,
        patch: &serde_json::Value,
    ) -> Result<Device, Error> {
        let op = "Devices_Update";
        let url = self.url(op, &["devices", id], false)?;
        self.json(Call::new(op, Method::PATCH, url).merge_patch(patch)?)
            .await
    }

    /// Deletes a device (`Devices_Remove`).
    pub async fn delete_device(&self, id: &str) -> Result<(), Error> {
        let op = "Devices_Remove";
        let url = self.url(op, &["devices", id], false)?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }

    /// Gets what the device needs to connect: id scope and keys or certificates
    /// (`Devices_GetCredentials`).
    pub async fn get_device_credentials(&self, id: &str) -> Result<DeviceCredentials, Error> {
        let op = "Devices_GetCredentials";
        let url = self.url(op, &["devices", id, "credentials"], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Gets the device's individual attestation (`Devices_GetAttestation`).
    pub async fn get_device_attestation(&self, id: &str) -> Result<Attestation, Error> {
        let op = "Devices_GetAttestation";
        let url = self.url(op, &["devices", id, "attestation"], false)?;
        self.json(Call::new(op, Method::GET, url)).await
    }

    /// Sets (creates or replaces) the device's individual attestation
    /// (`Devices_CreateAttestation`).
    pub async fn set_device_attestation(
        &self,
        id: &str,
        attestation: &Attestation,
    ) -> Result<Attestation, Error> {
        let op = "Devices_CreateAttestation";
        let url = self.url(op, &["devices", id, "attestation"], false)?;
        self.json(Call::new(op, Method::PUT, url).json(attestation)?)
            .await
    }

    /// Updates the device's individual attestation with a merge patch
    /// (`Devices_UpdateAttestation`).
    pub async fn update_device_attestation(
        &self,
        id: &str,
        patch: &serde_json::Value,
    ) -> Result<Attestation, Error> {
        let op = "Devices_UpdateAttestation";
        let url = self.url(op, &["devices", id, "attestation"], false)?;
        self.json(Call::new(op, Method::PATCH, url).merge_patch(patch)?)
            .await
    }

    /// Removes the device's individual attestation (`Devices_RemoveAttestation`).
    pub async fn delete_device_attestation(&self, id: &str) -> Result<(), Error> {
        let op = "Devices_RemoveAttestation";
        let url = self.url(op, &["devices", id, "attestation"], false)?;
        self.empty(Call::new(op, Method::DELETE, url)).await
    }
}
