//! One list/get/create/update/delete path for every IoT Central resource of the CLI.
//!
//! Each resource is declared once with [`resource!`]: its name in messages and the client
//! call behind each verb it has (its columns come from [`Tabular`]). The commands of every
//! resource then page, print and report through the same [`Ctx`] methods, so adding a
//! resource is a declaration and a clap enum, not another copy of the plumbing.

use super::super::output::{print_json, print_table, OutputFormat};
use super::super::CliError;
use super::tables::Tabular;
use super::Ctx;
use crate::central::models::{
    ApiToken, Device, DeviceGroup, DeviceTemplate, EnrollmentGroup, Organization, Page, Role, User,
};
use crate::central::{Client, Error, ListOptions, Pager};
use crate::ids::{DeviceGroupId, DeviceId, EnrollmentGroupId, InvalidId, OrganizationId, UserId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// A resource the CLI can list and show.
pub(super) trait Resource: Serialize + DeserializeOwned + Tabular {
    /// Its name in messages ("device group").
    const NAME: &'static str;
    /// Every item, page by page (options the resource's list does not take are ignored;
    /// its clap command offers only those it takes).
    fn list(c: &Client, options: &ListOptions) -> Pager<Self>;
    /// One item.
    async fn get(c: &Client, id: &str) -> Result<Self, Error>;
}

/// A resource the CLI can create (PUT).
pub(super) trait Create: Resource {
    /// Refuses an id the service would refuse, before any request is sent.
    fn check_id(id: &str) -> Result<(), InvalidId>;
    /// Creates (or replaces) the item.
    async fn create(c: &Client, id: &str, body: &Self) -> Result<Self, Error>;
}

/// A resource the CLI can change with a JSON merge patch.
pub(super) trait Update: Resource {
    /// Applies the patch.
    async fn update(c: &Client, id: &str, patch: &Value) -> Result<Self, Error>;
}

/// A resource the CLI can delete.
pub(super) trait Delete: Resource {
    /// Deletes the item.
    async fn delete(c: &Client, id: &str) -> Result<(), Error>;
}

/// Declares a resource: `Type, "name", list: |client, options| ..., get: method` and, for the
/// verbs it has, `create: method checks IdType`, `update: method`, `delete: method`.
macro_rules! resource {
    ($ty:ty, $name:literal, list: $list:expr, get: $get:ident
     $(, create: $create:ident checks $id:ty)? $(, update: $update:ident)?
     $(, delete: $delete:ident)? $(,)?) => {
        impl Resource for $ty {
            const NAME: &'static str = $name;
            fn list(c: &Client, options: &ListOptions) -> Pager<Self> {
                let list: fn(&Client, &ListOptions) -> Pager<Self> = $list;
                list(c, options)
            }
            async fn get(c: &Client, id: &str) -> Result<Self, Error> {
                c.$get(id).await
            }
        }
        $(impl Create for $ty {
            fn check_id(id: &str) -> Result<(), InvalidId> {
                <$id>::new(id).map(drop)
            }
            async fn create(c: &Client, id: &str, body: &Self) -> Result<Self, Error> {
                c.$create(id, body).await
            }
        })?
        $(impl Update for $ty {
            async fn update(c: &Client, id: &str, patch: &Value) -> Result<Self, Error> {
                c.$update(id, patch).await
            }
        })?
        $(impl Delete for $ty {
            async fn delete(c: &Client, id: &str) -> Result<(), Error> {
                c.$delete(id).await
            }
        })?
    };
}

resource!(Organization, "organization",
    list: |c, _| c.list_organizations(), get: get_organization,
    create: create_organization checks OrganizationId,
    update: update_organization, delete: delete_organization);
resource!(Role, "role", list: |c, _| c.list_roles(), get: get_role);
resource!(User, "user",
    list: |c, o| c.list_users(o), get: get_user,
    create: create_user checks UserId, update: update_user, delete: delete_user);
resource!(ApiToken, "API token",
    list: |c, _| c.list_api_tokens(), get: get_api_token, delete: delete_api_token);
resource!(Device, "device",
    list: |c, o| c.list_devices(o), get: get_device,
    create: create_device checks DeviceId, update: update_device, delete: delete_device);
resource!(DeviceGroup, "device group",
    list: |c, o| c.list_device_groups(o), get: get_device_group,
    create: create_device_group checks DeviceGroupId,
    update: update_device_group, delete: delete_device_group);
resource!(EnrollmentGroup, "enrollment group",
    list: |c, _| c.list_enrollment_groups(), get: get_enrollment_group,
    create: create_enrollment_group checks EnrollmentGroupId,
    update: update_enrollment_group, delete: delete_enrollment_group);
resource!(DeviceTemplate, "device template",
    list: |c, o| c.list_device_templates(o), get: get_device_template);

/// The fields an `update` command changes: only the options given go into the merge patch.
#[derive(Debug, Default)]
pub(super) struct Patch(Map<String, Value>);

impl Patch {
    /// Sets `field` when the option was given.
    pub(super) fn set(mut self, field: &str, value: Option<impl Into<Value>>) -> Patch {
        if let Some(v) = value {
            self.0.insert(field.to_owned(), v.into());
        }
        self
    }

    /// The patch, or an error when no option was given (an empty patch changes nothing).
    pub(super) fn into_value(self) -> Result<Value, CliError> {
        if self.0.is_empty() {
            return Err("nothing to update: give at least one field option".into());
        }
        Ok(Value::Object(self.0))
    }
}

impl Ctx {
    /// Prints one item: its row under the header, or its JSON.
    pub(super) fn show<T: Serialize + Tabular>(&self, item: &T) -> Result<(), CliError> {
        match self.output {
            OutputFormat::Json => print_json(item),
            OutputFormat::Table => {
                print_table(T::HEADER, &[item.row()]);
                Ok(())
            }
        }
    }

    /// Reads every page and prints the items: a table, or one `{"value": [...]}`.
    pub(super) async fn show_all<T: Serialize + Tabular + DeserializeOwned>(
        &self,
        pager: Pager<T>,
    ) -> Result<(), CliError> {
        let items = pager.collect_all().await?;
        match self.output {
            OutputFormat::Json => print_json(&Page {
                value: items,
                next_link: None,
            }),
            OutputFormat::Table => {
                let rows: Vec<_> = items.iter().map(Tabular::row).collect();
                print_table(T::HEADER, &rows);
                Ok(())
            }
        }
    }

    /// `… list`.
    pub(super) async fn list<R: Resource>(&self, options: &ListOptions) -> Result<(), CliError> {
        self.show_all(R::list(&self.client, options)).await
    }

    /// `… get ID`.
    pub(super) async fn get<R: Resource>(&self, id: &str) -> Result<(), CliError> {
        self.show(&R::get(&self.client, id).await?)
    }

    /// `… create ID …`: the id is checked before anything is sent.
    pub(super) async fn create<R: Create>(&self, id: &str, body: &R) -> Result<(), CliError> {
        R::check_id(id)?;
        self.show(&R::create(&self.client, id, body).await?)
    }

    /// `… update ID …`.
    pub(super) async fn update<R: Update>(&self, id: &str, patch: Patch) -> Result<(), CliError> {
        let patch = patch.into_value()?;
        self.show(&R::update(&self.client, id, &patch).await?)
    }

    /// `… delete ID`.
    pub(super) async fn delete<R: Delete>(&self, id: &str) -> Result<(), CliError> {
        R::delete(&self.client, id).await?;
        self.done(format!("deleted {} {id}", R::NAME));
        Ok(())
    }
}
