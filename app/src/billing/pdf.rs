//! Invoice PDFs, written with `pdf-writer` (no build script, no network,
//! no fonts to embed: the standard Helvetica faces with WinAnsi encoding).
//! One A4 page: seller and buyer, number, dates, status, the lines,
//! subtotal, tax, total and currency. Money is printed from its decimal
//! text, never through a float; the `f32`s here are page coordinates only.

use std::sync::OnceLock;

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use projections::billing::InvoiceView;

/// Most invoice lines printed (an invoice holds at most 100; one page fits
/// this many, the rest are summarized).
const LINES_PRINTED_MAX: usize = 30;
/// Longest text printed on one line, in characters.
const TEXT_CHARS_MAX: usize = 90;

/// Who issues the invoices: `LEDGER_SELLER_NAME` and `LEDGER_SELLER_ADDRESS`
/// (lines separated by `|`), read once.
pub struct Seller {
    pub name: String,
    pub address: Vec<String>,
}

pub fn seller() -> &'static Seller {
    static SELLER: OnceLock<Seller> = OnceLock::new();
    SELLER.get_or_init(|| Seller {
        name: std::env::var("LEDGER_SELLER_NAME").unwrap_or_else(|_| "Ledger Billing".into()),
        address: std::env::var("LEDGER_SELLER_ADDRESS")
            .map(|a| a.split('|').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// Text as WinAnsi bytes: ASCII and Latin-1 as they are, anything else `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .take(TEXT_CHARS_MAX)
        .map(|c| match u32::from(c) {
            b @ (0x20..=0x7e | 0xa0..=0xff) => b as u8,
            _ => b'?',
        })
        .collect()
}

/// Writes text lines top-down.
struct Page {
    content: Content,
    y: f32,
}

impl Page {
    fn text(&mut self, x: f32, font: &[u8], size: f32, text: &str) {
        let bytes = win_ansi(text);
        self.content
            .begin_text()
            .set_font(Name(font), size)
            .next_line(x, self.y)
            .show(Str(&bytes))
            .end_text();
    }
    fn line(&mut self, font: &[u8], size: f32, text: &str) {
        self.text(50.0, font, size, text);
        self.y -= size + 4.0;
    }
    fn gap(&mut self, points: f32) {
        self.y -= points;
    }
}

fn date(rfc3339: &str) -> &str {
    rfc3339.get(..10).unwrap_or(rfc3339)
}

/// The invoice as a one-page PDF.
pub fn render(invoice: &InvoiceView) -> Vec<u8> {
    let seller = seller();
    let d = &invoice.document;
    let catalog_id = Ref::new(1);
    let page_tree_id = Ref::new(2);
    let page_id = Ref::new(3);
    let font_id = Ref::new(4);
    let bold_id = Ref::new(5);
    let content_id = Ref::new(6);
    let info_id = Ref::new(7);

    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id).pages(page_tree_id);
    pdf.pages(page_tree_id).kids([page_id]).count(1);
    let mut page = pdf.page(page_id);
    page.media_box(Rect::new(0.0, 0.0, 595.0, 842.0));
    page.parent(page_tree_id);
    page.contents(content_id);
    page.resources()
        .fonts()
        .pair(Name(b"F1"), font_id)
        .pair(Name(b"F2"), bold_id);
    page.finish();
    pdf.type1_font(font_id)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold_id)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info_id)
        .title(TextStr(&format!("Invoice {}", invoice.number)))
        .producer(TextStr("ledger-server"));

    let mut p = Page {
        content: Content::new(),
        y: 790.0,
    };
    p.line(b"F2", 20.0, &format!("Invoice {}", invoice.number));
    p.gap(6.0);
    p.line(b"F1", 10.0, &format!("Status: {}", invoice.status));
    p.line(
        b"F1",
        10.0,
        &format!("Invoice date: {}", date(&invoice.issued_at)),
    );
    p.line(b"F1", 10.0, &format!("Due date: {}", date(&invoice.due_at)));
    if let Some(paid) = &invoice.paid_at {
        p.line(b"F1", 10.0, &format!("Paid at: {}", date(paid)));
    }
    p.gap(10.0);

    p.line(b"F2", 11.0, "Seller");
    p.line(b"F1", 10.0, &seller.name);
    for l in &seller.address {
        p.line(b"F1", 10.0, l);
    }
    p.gap(8.0);
    p.line(b"F2", 11.0, "Bill to");
    p.line(b"F1", 10.0, &d.buyer_name);
    if let Some(a) = &d.billing_address {
        for l in [&a.line1, &a.line2, &a.city, &a.region, &a.postal_code]
            .into_iter()
            .flatten()
        {
            p.line(b"F1", 10.0, l);
        }
        if let Some(c) = &a.country {
            p.line(b"F1", 10.0, c.as_str());
        }
    }
    if let Some(email) = &d.billing_email {
        p.line(b"F1", 10.0, email);
    }
    if let Some(tax_id) = &d.tax_id {
        p.line(b"F1", 10.0, &format!("Tax id: {tax_id}"));
    }
    p.gap(12.0);

    p.text(50.0, b"F2", 10.0, "Description");
    p.text(330.0, b"F2", 10.0, "Qty");
    p.text(380.0, b"F2", 10.0, "Unit price");
    p.text(480.0, b"F2", 10.0, "Amount");
    p.gap(16.0);
    for l in d.lines.iter().take(LINES_PRINTED_MAX) {
        p.text(50.0, b"F1", 10.0, &l.description);
        p.text(330.0, b"F1", 10.0, &l.quantity.to_string());
        p.text(380.0, b"F1", 10.0, &l.unit_price.to_string());
        p.text(480.0, b"F1", 10.0, &l.amount.to_string());
        p.gap(14.0);
    }
    if d.lines.len() > LINES_PRINTED_MAX {
        p.line(
            b"F1",
            10.0,
            &format!("... and {} more lines", d.lines.len() - LINES_PRINTED_MAX),
        );
    }
    p.gap(10.0);
    let currency = invoice.currency.as_str();
    for (label, amount) in [
        ("Subtotal".to_owned(), &invoice.subtotal),
        (format!("Tax ({}%)", d.tax_rate), &invoice.tax),
    ] {
        p.text(380.0, b"F1", 10.0, &label);
        p.text(480.0, b"F1", 10.0, &format!("{amount} {currency}"));
        p.gap(14.0);
    }
    p.text(380.0, b"F2", 11.0, "Total");
    p.text(480.0, b"F2", 11.0, &format!("{} {currency}", invoice.total));
    p.gap(24.0);
    p.line(b"F1", 10.0, &format!("Currency: {currency}"));
    if let Some(notes) = &d.notes {
        p.line(b"F1", 10.0, notes);
    }

    let content = p.content.finish();
    pdf.stream(content_id, &content);
    pdf.finish()
}
