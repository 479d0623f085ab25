-- Payment approval notes (issue 16): what the approver noted, shown in the
-- payment's detail and the admin payment list.
ALTER TABLE rm_payments ADD COLUMN notes text;
