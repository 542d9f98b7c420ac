//! XEP-0115 entity capabilities: the `ver` hash of a disco#info answer (section 5.1), checked
//! before an answer is cached under it (section 5.4), so that nobody can make stratus file
//! made-up features under a hash other clients announce.

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::xml::Element;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DATA: &str = "jabber:x:data";

/// A data form of the answer: its FORM_TYPE and its other fields with their values.
type Form = (String, Vec<(String, Vec<String>)>);

/// The verification string of a disco#info `<query/>` (XEP-0115 5.1), or why the answer must not
/// be accepted for a hash (5.4: duplicate identities or features, malformed forms).
pub fn verification_string(query: &Element) -> Result<String, &'static str> {
    let mut identities: Vec<[String; 4]> = query
        .children()
        .filter(|c| c.is("identity", NS_DISCO_INFO))
        .map(|i| {
            [
                i.get_attr("category").unwrap_or_default().to_owned(),
                i.get_attr("type").unwrap_or_default().to_owned(),
                i.get_attr("xml:lang").unwrap_or_default().to_owned(),
                i.get_attr("name").unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    identities.sort();
    if identities.windows(2).any(|w| w[0] == w[1]) {
        return Err("duplicate identity");
    }
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", NS_DISCO_INFO))
        .filter_map(|f| f.get_attr("var"))
        .collect();
    features.sort_unstable();
    if features.windows(2).any(|w| w[0] == w[1]) {
        return Err("duplicate feature");
    }
    let mut forms: Vec<Form> = Vec::new();
    for form in query.children().filter(|c| c.is("x", NS_DATA)) {
        let mut form_type = None;
        let mut fields = Vec::new();
        for field in form.children().filter(|f| f.is("field", NS_DATA)) {
            let mut values: Vec<String> = field
                .children()
                .filter(|v| v.is("value", NS_DATA))
                .map(Element::text_content)
                .collect();
            let var = field.get_attr("var").unwrap_or_default();
            if var == "FORM_TYPE" {
                if field.get_attr("type") != Some("hidden") || values.len() != 1 {
                    return Err("FORM_TYPE is not one hidden value");
                }
                if form_type.replace(values.remove(0)).is_some() {
                    return Err("two FORM_TYPE fields");
                }
                continue;
            }
            values.sort();
            fields.push((var.to_owned(), values));
        }
        // Forms without FORM_TYPE are left out of the hash (5.4, step 3.6).
        let Some(form_type) = form_type else { continue };
        fields.sort();
        forms.push((form_type, fields));
    }
    forms.sort();
    if forms.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("two forms with the same FORM_TYPE");
    }
    let mut s = String::new();
    for [category, kind, lang, name] in &identities {
        s.push_str(&format!("{category}/{kind}/{lang}/{name}<"));
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (form_type, fields) in forms {
        s.push_str(&form_type);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    Ok(s)
}

/// The `ver` a disco#info answer hashes to with SHA-1, or None when it may not be cached.
pub fn sha1_ver(query: &Element) -> Option<String> {
    let s = verification_string(query).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Limits, parse_element};

    fn q(xml: &str) -> Element {
        parse_element(xml, Limits::default()).unwrap()
    }

    #[test]
    fn simple_example_of_section_5_2() {
        let query = q("<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>");
        assert_eq!(
            verification_string(&query).unwrap(),
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
        );
        assert_eq!(sha1_ver(&query).unwrap(), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    #[test]
    fn complex_example_of_section_5_3() {
        let query = q("<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
             <identity xml:lang='el' category='client' name='\u{3a8} 0.11' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/>\
             <x xmlns='jabber:x:data' type='result'>\
               <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
               <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
               <field var='os'><value>Mac</value></field>\
               <field var='os_version'><value>10.5.1</value></field>\
               <field var='software'><value>Psi</value></field>\
               <field var='software_version'><value>0.11</value></field>\
             </x></query>");
        assert_eq!(sha1_ver(&query).unwrap(), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn section_5_4_refusals() {
        let dup = q("<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='a'/><feature var='a'/></query>");
        assert_eq!(sha1_ver(&dup), None);
        let two_types = q("<query xmlns='http://jabber.org/protocol/disco#info'>\
             <x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>\
             <value>a</value><value>b</value></field></x></query>");
        assert_eq!(sha1_ver(&two_types), None);
    }
}
