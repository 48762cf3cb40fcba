//! Callbacks: a finished message's outcome POSTed to its `reply_to` URL, signed.
