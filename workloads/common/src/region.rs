//! A regional deployment: a list of countries, a bounding box, or a centre with a radius.
//!
//! One type for the operator, which resolves `spec.aqi.region` into it and hands it to the
//! ingestor as arguments, and for the ingestor, which parses those arguments back, asks
//! Sensor.Community's filter API for the region only ([`Region::filter_query`]) and checks every
//! record against it.

use std::fmt;
use std::str::FromStr;

/// Mean Earth radius (IUGG), km: what "km from the centre" is measured on.
const EARTH_RADIUS_KM: f64 = 6371.0088;

#[derive(Clone, Debug, PartialEq)]
pub enum Region {
    /// ISO 3166 alpha-2 codes as the feed writes them (`GB` for the UK), upper case.
    Countries(Vec<String>),
    /// Degrees; `south < north` and `west < east` (a box across the antimeridian is two).
    Box {
        south: f64,
        west: f64,
        north: f64,
        east: f64,
    },
    /// A circle of `radius_km` around the centre, along the Earth's surface.
    Area {
        latitude: f64,
        longitude: f64,
        radius_km: f64,
    },
}

impl Region {
    /// Whether a point lies in a box or area region (`false` for countries: a point has none).
    pub fn contains_point(&self, lat: f64, lon: f64) -> bool {
        match *self {
            Region::Countries(_) => false,
            Region::Box {
                south,
                west,
                north,
                east,
            } => (south..=north).contains(&lat) && (west..=east).contains(&lon),
            Region::Area {
                latitude,
                longitude,
                radius_km,
            } => distance_km(latitude, longitude, lat, lon) <= radius_km,
        }
    }

    /// Whether a sensor, known by its country code and its coordinates (if valid), lies in the
    /// region: countries need only the code, box and area only the point.
    pub fn contains_sensor(&self, country: &str, point: Option<(f64, f64)>) -> bool {
        match self {
            Region::Countries(codes) => codes.iter().any(|c| c.eq_ignore_ascii_case(country)),
            _ => point.is_some_and(|(lat, lon)| self.contains_point(lat, lon)),
        }
    }

    /// The query part of Sensor.Community's filter API:
    /// `country=DE,NL`, `box=south,west,north,east` or `area=lat,lon,radius_km`.
    pub fn filter_query(&self) -> String {
        match self {
            Region::Countries(codes) => format!("country={}", codes.join(",")),
            Region::Box {
                south,
                west,
                north,
                east,
            } => format!("box={south},{west},{north},{east}"),
            Region::Area {
                latitude,
                longitude,
                radius_km,
            } => format!("area={latitude},{longitude},{radius_km}"),
        }
    }

    pub fn countries(list: &str) -> Result<Self, String> {
        let codes: Vec<String> = list
            .split(',')
            .map(|c| c.trim().to_ascii_uppercase())
            .filter(|c| !c.is_empty())
            .collect();
        if codes.is_empty() {
            return Err("give at least one country code, such as DE,NL".into());
        }
        if let Some(bad) = codes
            .iter()
            .find(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(format!(
                "{bad:?} is not a two-letter country code (such as GB)"
            ));
        }
        Ok(Region::Countries(codes))
    }

    pub fn bounding_box(text: &str) -> Result<Self, String> {
        let [south, west, north, east] = numbers(text, "south,west,north,east")?;
        check_latitude(south, "south")?;
        check_latitude(north, "north")?;
        check_longitude(west, "west")?;
        check_longitude(east, "east")?;
        if south >= north {
            return Err(format!("south ({south}) must be below north ({north})"));
        }
        if west >= east {
            return Err(format!(
                "west ({west}) must be below east ({east}); split a box across the antimeridian in two deployments"
            ));
        }
        Ok(Region::Box {
            south,
            west,
            north,
            east,
        })
    }

    pub fn area(text: &str) -> Result<Self, String> {
        let [latitude, longitude, radius_km] = numbers(text, "latitude,longitude,radius_km")?;
        check_latitude(latitude, "latitude")?;
        check_longitude(longitude, "longitude")?;
        if !(radius_km > 0.0 && radius_km <= 20_000.0) {
            return Err(format!(
                "the radius must be above 0 and at most 20000 km, not {radius_km}"
            ));
        }
        Ok(Region::Area {
            latitude,
            longitude,
            radius_km,
        })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.filter_query())
    }
}

/// `country=…`, `box=…` or `area=…`, as [`Region::filter_query`] writes it.
impl FromStr for Region {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().split_once('=') {
            Some(("country", v)) => Region::countries(v),
            Some(("box", v)) => Region::bounding_box(v),
            Some(("area", v)) => Region::area(v),
            _ => Err(format!(
                "{s:?}: expected country=DE,NL or box=S,W,N,E or area=LAT,LON,KM"
            )),
        }
    }
}

fn numbers<const N: usize>(text: &str, shape: &str) -> Result<[f64; N], String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() != N {
        return Err(format!("{text:?}: expected {shape}"));
    }
    let mut out = [0.0; N];
    for (slot, part) in out.iter_mut().zip(&parts) {
        *slot = part
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{part:?} is not a number (expected {shape})"))?;
    }
    Ok(out)
}

fn check_latitude(x: f64, name: &str) -> Result<(), String> {
    if (-90.0..=90.0).contains(&x) {
        Ok(())
    } else {
        Err(format!("{name} must be between -90 and 90, not {x}"))
    }
}

fn check_longitude(x: f64, name: &str) -> Result<(), String> {
    if (-180.0..=180.0).contains(&x) {
        Ok(())
    } else {
        Err(format!("{name} must be between -180 and 180, not {x}"))
    }
}

/// Great-circle distance (haversine), km.
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_are_upper_case_codes() {
        let r: Region = "country=gb, IE".parse().expect("valid");
        assert_eq!(r, Region::Countries(vec!["GB".into(), "IE".into()]));
        assert_eq!(r.filter_query(), "country=GB,IE");
        assert!(
            r.contains_sensor("gb", None),
            "countries need no coordinates"
        );
        assert!(!r.contains_sensor("FR", Some((51.5, -0.1))));
    }

    #[test]
    fn a_box_holds_its_edges() {
        let r = Region::bounding_box("49.9,-8.2,60.9,1.8").expect("valid");
        assert!(r.contains_point(49.9, 1.8), "edges are inside");
        assert!(!r.contains_point(48.8566, 2.3522));
        assert!(!r.contains_sensor("GB", None), "a box needs coordinates");
        assert_eq!(r.filter_query(), "box=49.9,-8.2,60.9,1.8");
        assert_eq!(r.to_string().parse::<Region>(), Ok(r));
    }

    #[test]
    fn an_area_is_a_circle_on_the_earth() {
        // London to Paris is about 344 km.
        let d = distance_km(51.5074, -0.1278, 48.8566, 2.3522);
        assert!((343.0..345.0).contains(&d), "{d}");
        let r = Region::area("51.5074,-0.1278,350").expect("valid");
        assert!(r.contains_point(48.8566, 2.3522));
        let r = Region::area("51.5074,-0.1278,340").expect("valid");
        assert!(!r.contains_point(48.8566, 2.3522));
        assert_eq!(r.filter_query(), "area=51.5074,-0.1278,340");
    }

    #[test]
    fn invalid_regions_say_what_to_fix() {
        for (text, fragment) in [
            ("country=", "at least one"),
            ("country=GBR", "two-letter"),
            ("box=60,0,50,1", "south (60) must be below north (50)"),
            ("box=50,10,60,-10", "west (10) must be below east (-10)"),
            ("box=-91,0,50,1", "south must be between -90 and 90"),
            ("box=50,0,60,181", "east must be between -180 and 180"),
            ("box=1,2,3", "expected south,west,north,east"),
            ("area=51,0,0", "radius must be above 0"),
            ("area=51,0,-5", "radius must be above 0"),
            ("area=95,0,5", "latitude must be between -90 and 90"),
            ("area=51,x,5", "\"x\" is not a number"),
            ("area=51,0,nan", "is not a number"),
            ("circle=1", "expected country="),
        ] {
            let e = text.parse::<Region>().expect_err(text);
            assert!(e.contains(fragment), "{text}: {e}");
        }
    }
}
