//! Input change events, as owned values with the source systems' own field names.
//!
//! Every event is a [`Change`]: a [`ChangeHeader`] that says what happened, to which version, by whom
//! and in which legal entity, and the `record` itself. The header is ours (each source names these
//! things differently, see `schemas/README.md`); the records keep Dataverse logical names on the Sales
//! side and F&O / Commerce names on the Commerce side, so a mapping table reads like a dual-write map.
//!
//! Record fields default when absent: a delete carries little more than its id, and a newer writer
//! schema may add fields an older reader does not know. Missing *required* values (an empty id) are
//! caught by the engine and become a rejected record, never a panic.

use serde::{Deserialize, Serialize};

use super::entity::entity;

/// What happened to the record. Dataverse `Create`/`Update`/`SetState`/`QualifyLead`/`Win`/`Lose`
/// messages all arrive as `Create` or `Update` of the row's new state; `Snapshot` is an initial-load
/// read (Debezium's `op=r`), treated like an update that may be the first sight of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Snapshot,
}

/// The envelope every change event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeHeader {
    pub op: Operation,
    /// Unique id of this change: Dataverse `CorrelationId`/`RequestId`, F&O business event `EventId`.
    pub change_id: String,
    /// Orders the changes of one record: Dataverse `versionnumber`, F&O `ControlNumber`. Gaps allowed.
    pub version: i64,
    /// When the source changed the record (Dataverse `modifiedon`, F&O `EventTime`), in epoch millis.
    pub modified_on: i64,
    /// Who changed it (Dataverse `modifiedby` systemuser id, F&O `InitiatingUserAADObjectId`). The
    /// connector recognises its own writes by this value.
    pub modified_by: String,
    /// The legal entity (`dataAreaId`, `msdyn_company.cdm_companycode`); absent on Sales rows that are
    /// not company-striped, in which case the case's or the configured default company applies.
    #[serde(default)]
    pub company: Option<String>,
}

/// One change of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change<T> {
    pub header: ChangeHeader,
    pub record: T,
}

entity! {
    /// A Commerce B2B prospect (`smmProspectEntity` / `smmBusRelTable`, type "B2B prospect"), with the
    /// onboarding form's fields as the notification placeholders name them.
    pub struct Prospect {
        control {
            "ProspectId" => prospect_id: String,
            /// `ProspectRelationTypeId`; only the configured B2B prospect type is synced.
            "ProspectRelationTypeId" => relation_type_id: Option<String>,
            /// `ProspectStatusCode`, an open enum: the connector writes Approved/Rejected, people may too.
            "ProspectStatusCode" => status: Option<String>,
        }
        text {
            "ProspectName" => prospect_name,
            "ContactPersonFirstName" => contact_first_name,
            "ContactPersonLastName" => contact_last_name,
            "PrimaryEmailAddress" => primary_email_address,
            "PrimaryPhoneNumber" => primary_phone_number,
            "ContactPersonJobTitle" => contact_job_title,
            "AddressStreet" => address_street,
            "AddressCity" => address_city,
            "AddressState" => address_state,
            "AddressZipCode" => address_zip_code,
            "AddressCountryRegionId" => address_country_region_id,
            "Comments" => comments,
            "StoreName" => store_name,
            "StoreUrl" => store_url,
            "CustomerGroupId" => customer_group_id,
        }
    }
}

entity! {
    /// A Dataverse `lead`.
    pub struct Lead {
        control {
            "leadid" => leadid: String,
            /// 0 Open, 1 Qualified, 2 Disqualified.
            "statecode" => statecode: i32,
            /// 1 New, 2 Contacted, 3 Qualified, 4 Lost, 5 Cannot Contact, 6 No Longer Interested, 7 Canceled.
            "statuscode" => statuscode: i32,
            "leadsourcecode" => leadsourcecode: Option<i32>,
            /// Custom choice column that the "All commerce B2B leads" view filters on.
            "partnersync_origin" => partnersync_origin: Option<i32>,
            /// Custom column `company/ProspectId` written by the connector: the link back to Commerce.
            "partnersync_prospectkey" => partnersync_prospectkey: Option<String>,
            "qualifyingopportunityid" => qualifyingopportunityid: Option<String>,
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

entity! {
    /// A Dataverse `opportunity`.
    pub struct Opportunity {
        control {
            "opportunityid" => opportunityid: String,
            /// The lead this opportunity was qualified from: the join key back to the prospect.
            "originatingleadid" => originatingleadid: Option<String>,
            /// 0 Open, 1 Won, 2 Lost.
            "statecode" => statecode: i32,
            /// 1 In Progress, 2 On Hold, 3 Won, 4 Canceled, 5 Out-Sold.
            "statuscode" => statuscode: i32,
            "customerid" => customerid: Option<String>,
            "parentaccountid" => parentaccountid: Option<String>,
            "parentcontactid" => parentcontactid: Option<String>,
        }
        text {
            "name" => name,
        }
    }
}

entity! {
    /// A Dataverse `contact`; becomes a Commerce customer of party type Person.
    pub struct Contact {
        control {
            "contactid" => contactid: String,
            "originatingleadid" => originatingleadid: Option<String>,
            "parentcustomerid" => parentcustomerid: Option<String>,
            /// 0 Active, 1 Inactive.
            "statecode" => statecode: i32,
            "msdyn_sellable" => msdyn_sellable: Option<bool>,
        }
        text {
            "firstname" => firstname,
            "middlename" => middlename,
            "lastname" => lastname,
            "emailaddress1" => emailaddress1,
            "telephone1" => telephone1,
            "mobilephone" => mobilephone,
            "jobtitle" => jobtitle,
            "address1_line1" => address1_line1,
            "address1_city" => address1_city,
            "address1_stateorprovince" => address1_stateorprovince,
            "address1_postalcode" => address1_postalcode,
            "address1_country" => address1_country,
            /// The integration key: equals the F&O `CustomerAccount`.
            "msdyn_contactpersonid" => msdyn_contactpersonid,
            "msdyn_customergroupid" => msdyn_customergroupid,
            "msdyn_partynumber" => msdyn_partynumber,
        }
    }
}

entity! {
    /// A Dataverse `account`; becomes a Commerce customer of party type Organization.
    pub struct Account {
        control {
            "accountid" => accountid: String,
            "originatingleadid" => originatingleadid: Option<String>,
            "primarycontactid" => primarycontactid: Option<String>,
            /// 3 Customer, 8 Prospect, …
            "customertypecode" => customertypecode: Option<i32>,
            /// 0 Active, 1 Inactive.
            "statecode" => statecode: i32,
        }
        text {
            "name" => name,
            /// The integration key: equals the F&O `CustomerAccount`.
            "accountnumber" => accountnumber,
            "emailaddress1" => emailaddress1,
            "telephone1" => telephone1,
            "websiteurl" => websiteurl,
            "address1_line1" => address1_line1,
            "address1_city" => address1_city,
            "address1_stateorprovince" => address1_stateorprovince,
            "address1_postalcode" => address1_postalcode,
            "address1_country" => address1_country,
            "address2_line1" => address2_line1,
            "address2_city" => address2_city,
            "address2_stateorprovince" => address2_stateorprovince,
            "address2_postalcode" => address2_postalcode,
            "address2_country" => address2_country,
            "msdyn_customergroupid" => msdyn_customergroupid,
            "msdyn_partynumber" => msdyn_partynumber,
        }
    }
}

/// What the route stage reads of an event: the header and the record's leading ids, which its case
/// key is computed from. Every record schema starts with its id, and those of opportunities,
/// contacts and accounts continue with `originatingleadid` (`tests/schemas.rs` checks the order).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFields {
    pub header: ChangeHeader,
    /// ProspectId, leadid, opportunityid, contactid or accountid.
    pub id: String,
    /// `originatingleadid`; always `None` for prospects and leads.
    pub originating_lead: Option<String>,
}

/// Any change the engine accepts, tagged by the source table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeEvent {
    Prospect(Change<Prospect>),
    Lead(Change<Lead>),
    Opportunity(Change<Opportunity>),
    Contact(Change<Contact>),
    Account(Change<Account>),
}

/// Which source table an event came from; a bounded label for metrics and skip counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Prospect,
    Lead,
    Opportunity,
    Contact,
    Account,
}

impl SourceKind {
    pub const ALL: [SourceKind; 5] = [
        SourceKind::Prospect,
        SourceKind::Lead,
        SourceKind::Opportunity,
        SourceKind::Contact,
        SourceKind::Account,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Prospect => "prospect",
            SourceKind::Lead => "lead",
            SourceKind::Opportunity => "opportunity",
            SourceKind::Contact => "contact",
            SourceKind::Account => "account",
        }
    }

    /// True for the Commerce side, false for Sales (Dataverse).
    pub fn is_commerce(self) -> bool {
        matches!(self, SourceKind::Prospect)
    }
}

impl ChangeEvent {
    pub fn header(&self) -> &ChangeHeader {
        match self {
            ChangeEvent::Prospect(c) => &c.header,
            ChangeEvent::Lead(c) => &c.header,
            ChangeEvent::Opportunity(c) => &c.header,
            ChangeEvent::Contact(c) => &c.header,
            ChangeEvent::Account(c) => &c.header,
        }
    }

    pub fn kind(&self) -> SourceKind {
        match self {
            ChangeEvent::Prospect(_) => SourceKind::Prospect,
            ChangeEvent::Lead(_) => SourceKind::Lead,
            ChangeEvent::Opportunity(_) => SourceKind::Opportunity,
            ChangeEvent::Contact(_) => SourceKind::Contact,
            ChangeEvent::Account(_) => SourceKind::Account,
        }
    }

    /// The source record's own id (ProspectId, leadid, …).
    pub fn entity_id(&self) -> &str {
        match self {
            ChangeEvent::Prospect(c) => &c.record.prospect_id,
            ChangeEvent::Lead(c) => &c.record.leadid,
            ChangeEvent::Opportunity(c) => &c.record.opportunityid,
            ChangeEvent::Contact(c) => &c.record.contactid,
            ChangeEvent::Account(c) => &c.record.accountid,
        }
    }
}
