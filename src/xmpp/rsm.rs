//! XEP-0059 Result Set Management: the request and the answer.

use crate::xml::Element;

pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RsmRequest {
    pub max: Option<usize>,
    /// `<after>`: the page after this id.
    pub after: Option<String>,
    /// `<before>`: Some("") for the last page, Some(id) for the page before id.
    pub before: Option<String>,
}

pub fn parse(set: &Element) -> Result<RsmRequest, String> {
    let text = |n: &str| set.get_child(n, NS_RSM).map(|e| e.text_content());
    let max = match text("max") {
        Some(m) => Some(
            m.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad RSM max {m:?}"))?,
        ),
        None => None,
    };
    if set.get_child("index", NS_RSM).is_some() {
        return Err("RSM <index/> is not supported; page with <after/> or <before/>".into());
    }
    Ok(RsmRequest {
        max,
        after: text("after"),
        before: text("before"),
    })
}

/// `<set>` describing a returned page.
pub fn answer(first: Option<(&str, Option<u64>)>, last: Option<&str>, count: u64) -> Element {
    let mut set = Element::new("set", NS_RSM);
    if let Some((id, index)) = first {
        let mut f = Element::new("first", NS_RSM).text(id);
        if let Some(i) = index {
            f.set_attr("index", i.to_string());
        }
        set.push_child(f);
    }
    if let Some(id) = last {
        set.push_child(Element::new("last", NS_RSM).text(id));
    }
    set.child(Element::new("count", NS_RSM).text(count.to_string()))
}
