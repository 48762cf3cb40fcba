//! Inbox folders: files dropped into a queue job's `inbox` become its messages.
