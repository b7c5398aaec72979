//! `spec.aqi.region`: the sensors of one region only, as a list of countries, a bounding box or
//! a circle. CEL rules check every coordinate, so a bad region is refused on apply.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A region, in exactly one of three forms.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "[has(self.countries), has(self.box), has(self.area)].filter(x, x).size() == 1", "message": "aqi.region needs exactly one of countries, box or area"}]))]
pub struct RegionSpec {
    /// Country codes as Sensor.Community writes them (ISO 3166 alpha-2; the UK is `GB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.all(c, c.matches('^[A-Z]{2}$'))", "message": "aqi.region.countries are two capital letters, such as GB"}]))]
    #[schemars(length(min = 1, max = 64), inner(length(min = 2, max = 2)))]
    pub countries: Option<Vec<String>>,
    /// A bounding box in degrees.
    #[serde(default, rename = "box", skip_serializing_if = "Option::is_none")]
    pub bounding_box: Option<BoxSpec>,
    /// A circle around a centre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<AreaSpec>,
}

/// A box from `south` to `north` and from `west` to `east`, in degrees.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.south < self.north", "message": "aqi.region.box.south must be below north"},
    {"rule": "self.west < self.east", "message": "aqi.region.box.west must be below east (a box across the antimeridian takes two deployments)"}
]))]
pub struct BoxSpec {
    /// Southern edge, degrees of latitude (-90 to 90).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -90.0 && self <= 90.0", "message": "aqi.region.box.south must be between -90 and 90"}]))]
    pub south: f64,
    /// Western edge, degrees of longitude (-180 to 180).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -180.0 && self <= 180.0", "message": "aqi.region.box.west must be between -180 and 180"}]))]
    pub west: f64,
    /// Northern edge, degrees of latitude, above `south`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -90.0 && self <= 90.0", "message": "aqi.region.box.north must be between -90 and 90"}]))]
    pub north: f64,
    /// Eastern edge, degrees of longitude, east of `west`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -180.0 && self <= 180.0", "message": "aqi.region.box.east must be between -180 and 180"}]))]
    pub east: f64,
}

/// Every sensor within `radiusKm` of a centre, along the Earth's surface.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AreaSpec {
    /// Latitude of the centre, degrees.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -90.0 && self <= 90.0", "message": "aqi.region.area.latitude must be between -90 and 90"}]))]
    pub latitude: f64,
    /// Longitude of the centre, degrees.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -180.0 && self <= 180.0", "message": "aqi.region.area.longitude must be between -180 and 180"}]))]
    pub longitude: f64,
    /// Radius in km.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self > 0.0 && self <= 20000.0", "message": "aqi.region.area.radiusKm must be above 0 and at most 20000"}]))]
    pub radius_km: f64,
}
