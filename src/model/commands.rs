//! Output commands: what the engine asks each side to do.
//!
//! Commands are upserts or idempotent creates keyed by ids the engine derives from its inputs, so a
//! command delivered twice (at-least-once) changes nothing the second time. Every command carries
//! `command_id` (a UUID v5 of what caused it, identical on every replay) and `caused_by` (the change id
//! of the input that caused it) for tracing and downstream de-duplication.

use serde::{Deserialize, Serialize};

use super::entity::entity;

entity! {
    /// Create or update a Dataverse `lead` for a B2B prospect. `leadid` is derived from the prospect,
    /// so the Dataverse upsert (`PATCH /leads(leadid)`) is idempotent.
    pub struct LeadUpsert {
        control {
            "command_id" => command_id: String,
            "caused_by" => caused_by: String,
            "leadid" => leadid: String,
            /// True for the first write of this lead, false for later edits.
            "is_create" => is_create: bool,
            /// The owning team (never a person, so the lead is in no one's "My open leads").
            "ownerid" => ownerid: String,
            "owneridtype" => owneridtype: String,
            "leadsourcecode" => leadsourcecode: i32,
            "partnersync_origin" => partnersync_origin: i32,
            "partnersync_prospectkey" => partnersync_prospectkey: String,
        }
        text {
            "firstname" => firstname,
            "lastname" => lastname,
            "companyname" => companyname,
            "emailaddress1" => emailaddress1,
            "telephone1" => telephone1,
            "mobilephone" => mobilephone,
            "jobtitle" => jobtitle,
            "address1_line1" => address1_line1,
            "address1_city" => address1_city,
            "address1_stateorprovince" => address1_stateorprovince,
            "address1_postalcode" => address1_postalcode,
            "address1_country" => address1_country,
            "subject" => subject,
            "description" => description,
        }
    }
}

/// Create a timeline note (Dataverse `annotation`) on the lead saying the integration created it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeadNote {
    pub command_id: String,
    pub caused_by: String,
    pub annotationid: String,
    /// The lead the note is attached to.
    pub objectid: String,
    pub objecttypecode: String,
    pub subject: String,
    pub notetext: String,
}

entity! {
    /// Upsert a Commerce customer (`CustomersV3`, keyed by `dataAreaId` + `CustomerAccount`).
    pub struct CustomerUpsert {
        control {
            "command_id" => command_id: String,
            "caused_by" => caused_by: String,
            "dataAreaId" => data_area_id: String,
            "CustomerAccount" => customer_account: String,
            /// `Person` for contacts, `Organization` for accounts (configurable labels).
            "PartyType" => party_type: String,
        }
        text {
            "OrganizationName" => organization_name,
            "PersonFirstName" => person_first_name,
            "PersonMiddleName" => person_middle_name,
            "PersonLastName" => person_last_name,
            "PersonProfessionalTitle" => person_professional_title,
            "PrimaryContactEmail" => primary_contact_email,
            "PrimaryContactPhone" => primary_contact_phone,
            "PartyNumber" => party_number,
            "CustomerGroupId" => customer_group_id,
            "SalesCurrencyCode" => sales_currency_code,
            "AddressStreet" => address_street,
            "AddressCity" => address_city,
            "AddressState" => address_state,
            "AddressZipCode" => address_zip_code,
            "AddressCountryRegionISOCode" => address_country_region_iso_code,
            "DeliveryAddressStreet" => delivery_address_street,
            "DeliveryAddressCity" => delivery_address_city,
            "DeliveryAddressState" => delivery_address_state,
            "DeliveryAddressZipCode" => delivery_address_zip_code,
            "DeliveryAddressCountryRegionISOCode" => delivery_address_country_region_iso_code,
            "InvoiceAddressStreet" => invoice_address_street,
            "InvoiceAddressCity" => invoice_address_city,
            "InvoiceAddressState" => invoice_address_state,
            "InvoiceAddressZipCode" => invoice_address_zip_code,
            "InvoiceAddressCountryRegionISOCode" => invoice_address_country_region_iso_code,
        }
    }
}

/// Set the B2B prospect's status in Commerce (Approved or Rejected).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProspectStatusUpdate {
    pub command_id: String,
    pub caused_by: String,
    #[serde(rename = "dataAreaId")]
    pub data_area_id: String,
    #[serde(rename = "ProspectId")]
    pub prospect_id: String,
    #[serde(rename = "ProspectStatusCode")]
    pub status: String,
    /// Why: e.g. "Opportunity won", "Lead disqualified: No Longer Interested".
    #[serde(rename = "StatusReason")]
    pub reason: String,
}

/// Create the B2B customer hierarchy for an approved prospect: the organization customer at the top,
/// the requester's Person customer as its Admin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomerHierarchyCreate {
    pub command_id: String,
    pub caused_by: String,
    #[serde(rename = "dataAreaId")]
    pub data_area_id: String,
    /// Derived from the prospect so the create is idempotent (Commerce would otherwise draw it from a
    /// number sequence; configure a disjoint prefix).
    #[serde(rename = "HierarchyId")]
    pub hierarchy_id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Purpose")]
    pub purpose: String,
    #[serde(rename = "OrganizationCustomerAccount")]
    pub organization_customer_account: String,
    #[serde(rename = "AdminCustomerAccount")]
    pub admin_customer_account: String,
    #[serde(rename = "AdminRole")]
    pub admin_role: String,
    #[serde(rename = "ProspectId")]
    pub prospect_id: String,
}

/// Ask Commerce to send the "B2B prospect rejected" email to the requester.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationRequest {
    pub command_id: String,
    pub caused_by: String,
    #[serde(rename = "dataAreaId")]
    pub data_area_id: String,
    #[serde(rename = "NotificationType")]
    pub notification_type: String,
    #[serde(rename = "ProspectId")]
    pub prospect_id: String,
    pub email: String,
    pub firstname: String,
    pub lastname: String,
    pub company: String,
}

/// Something a person must look at; the engine never guesses in these cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A won opportunity was reopened after the prospect was approved; approval is not undone.
    ReopenedAfterWon,
    /// An opportunity was won after the prospect had been rejected (and the email sent).
    WonAfterRejection,
    /// Another prospect in the same legal entity uses the same requester email.
    DuplicateRequester,
    /// A lead was qualified without creating an opportunity; nothing will approve the prospect.
    QualifiedWithoutOpportunity,
    /// The integration key (accountnumber / msdyn_contactpersonid) changed after the customer was linked.
    IntegrationKeyChanged,
    /// The lead of a pending prospect was deleted; the prospect stays pending in Commerce.
    LeadDeletedWhilePending,
    /// A second account or contact was qualified from the same lead; the first one stays linked.
    RequalifiedDuplicate,
    /// An opportunity was won for a prospect that was deleted in Commerce.
    ProspectDeleted,
    /// A contact's email is already the primary email of another Person customer in its legal
    /// entity: its customer is not sent, and its prospect's approval is held.
    EmailTaken,
    /// A prospect was rejected, but it has no requester email to send the rejection to.
    RejectionEmailNotSent,
}

impl AlertKind {
    pub const ALL: [AlertKind; 10] = [
        AlertKind::ReopenedAfterWon,
        AlertKind::WonAfterRejection,
        AlertKind::DuplicateRequester,
        AlertKind::QualifiedWithoutOpportunity,
        AlertKind::IntegrationKeyChanged,
        AlertKind::LeadDeletedWhilePending,
        AlertKind::RequalifiedDuplicate,
        AlertKind::ProspectDeleted,
        AlertKind::EmailTaken,
        AlertKind::RejectionEmailNotSent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ReopenedAfterWon => "reopened_after_won",
            AlertKind::WonAfterRejection => "won_after_rejection",
            AlertKind::DuplicateRequester => "duplicate_requester",
            AlertKind::QualifiedWithoutOpportunity => "qualified_without_opportunity",
            AlertKind::IntegrationKeyChanged => "integration_key_changed",
            AlertKind::LeadDeletedWhilePending => "lead_deleted_while_pending",
            AlertKind::RequalifiedDuplicate => "requalified_duplicate",
            AlertKind::ProspectDeleted => "prospect_deleted",
            AlertKind::EmailTaken => "email_taken",
            AlertKind::RejectionEmailNotSent => "rejection_email_not_sent",
        }
    }
}

/// An operational alert, written to the alerts topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub command_id: String,
    pub caused_by: String,
    pub kind: AlertKind,
    #[serde(rename = "dataAreaId")]
    pub data_area_id: String,
    /// The prospect concerned, when known.
    #[serde(rename = "ProspectId", default)]
    pub prospect_id: Option<String>,
    /// A sentence saying what happened and what to do.
    pub message: String,
}

/// Any command, tagged by its target (payloads boxed, see `into_command!`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    LeadUpsert(Box<LeadUpsert>),
    LeadNote(Box<LeadNote>),
    CustomerUpsert(Box<CustomerUpsert>),
    ProspectStatus(Box<ProspectStatusUpdate>),
    CustomerHierarchy(Box<CustomerHierarchyCreate>),
    RejectionEmail(Box<NotificationRequest>),
    Alert(Box<Alert>),
}

// Each payload is boxed: an unboxed `Command` is 720 bytes (the width of `CustomerUpsert`), so the
// first command of a record made its `Vec` allocate 2,880 bytes, past glibc's per-thread cache, and
// every move copied 720 bytes. Boxed, a command is 16 bytes and its payload one small allocation.
macro_rules! into_command {
    ($($variant:ident($payload:ty)),* $(,)?) => {
        $(impl From<$payload> for Command {
            fn from(payload: $payload) -> Command {
                Command::$variant(Box::new(payload))
            }
        }
        impl From<Box<$payload>> for Command {
            fn from(payload: Box<$payload>) -> Command {
                Command::$variant(payload)
            }
        })*
    };
}

into_command!(
    LeadUpsert(LeadUpsert),
    LeadNote(LeadNote),
    CustomerUpsert(CustomerUpsert),
    ProspectStatus(ProspectStatusUpdate),
    CustomerHierarchy(CustomerHierarchyCreate),
    RejectionEmail(NotificationRequest),
    Alert(Alert),
);

/// Which target a command goes to; one output topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    LeadUpsert,
    LeadNote,
    CustomerUpsert,
    ProspectStatus,
    CustomerHierarchy,
    RejectionEmail,
    Alert,
}

impl CommandKind {
    pub const ALL: [CommandKind; 7] = [
        CommandKind::LeadUpsert,
        CommandKind::LeadNote,
        CommandKind::CustomerUpsert,
        CommandKind::ProspectStatus,
        CommandKind::CustomerHierarchy,
        CommandKind::RejectionEmail,
        CommandKind::Alert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::LeadUpsert => "lead_upsert",
            CommandKind::LeadNote => "lead_note",
            CommandKind::CustomerUpsert => "customer_upsert",
            CommandKind::ProspectStatus => "prospect_status",
            CommandKind::CustomerHierarchy => "customer_hierarchy",
            CommandKind::RejectionEmail => "rejection_email",
            CommandKind::Alert => "alert",
        }
    }
}

impl Command {
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::LeadUpsert(_) => CommandKind::LeadUpsert,
            Command::LeadNote(_) => CommandKind::LeadNote,
            Command::CustomerUpsert(_) => CommandKind::CustomerUpsert,
            Command::ProspectStatus(_) => CommandKind::ProspectStatus,
            Command::CustomerHierarchy(_) => CommandKind::CustomerHierarchy,
            Command::RejectionEmail(_) => CommandKind::RejectionEmail,
            Command::Alert(_) => CommandKind::Alert,
        }
    }

    pub fn command_id(&self) -> &str {
        match self {
            Command::LeadUpsert(c) => &c.command_id,
            Command::LeadNote(c) => &c.command_id,
            Command::CustomerUpsert(c) => &c.command_id,
            Command::ProspectStatus(c) => &c.command_id,
            Command::CustomerHierarchy(c) => &c.command_id,
            Command::RejectionEmail(c) => &c.command_id,
            Command::Alert(c) => &c.command_id,
        }
    }

    /// The Kafka message key: the target record's identity, so all commands for one target record
    /// land on one partition in order and compaction keeps the latest.
    pub fn key(&self) -> String {
        match self {
            Command::LeadUpsert(c) => c.leadid.clone(),
            Command::LeadNote(c) => c.annotationid.clone(),
            Command::CustomerUpsert(c) => [&c.data_area_id, "/", &c.customer_account].concat(),
            Command::ProspectStatus(c) => [&c.data_area_id, "/", &c.prospect_id].concat(),
            Command::CustomerHierarchy(c) => [&c.data_area_id, "/", &c.hierarchy_id].concat(),
            Command::RejectionEmail(c) => [&c.data_area_id, "/", &c.prospect_id].concat(),
            Command::Alert(c) => c.command_id.clone(),
        }
    }
}
