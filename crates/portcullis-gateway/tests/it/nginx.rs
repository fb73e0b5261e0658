//! nginx auth_request in front of Portcullis (written by the nginx helper).
