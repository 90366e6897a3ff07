//! A real OpenSSH sshd on 127.0.0.1 for end-to-end tests (filled in by the sshd test work).
