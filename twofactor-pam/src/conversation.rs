//! The user side of a login: the PAM conversation, behind a trait so tests can script it.

use zeroize::Zeroizing;

/// The conversation failed: no terminal, the user cancelled, or the application refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationError;

/// What the module can ask of the user.
pub trait Conversation {
    /// Asks a question; `echo` says whether the answer may be shown while typed.
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Zeroizing<String>, ConversationError>;
    /// Shows information.
    fn info(&mut self, text: &str) -> Result<(), ConversationError>;
    /// Shows an error.
    fn error(&mut self, text: &str) -> Result<(), ConversationError>;
}

/// The application's PAM conversation function.
pub struct PamConversation<'a>(pub pam::conv::Conv<'a>);

impl Conversation for PamConversation<'_> {
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Zeroizing<String>, ConversationError> {
        let style = if echo {
            pam::constants::PAM_PROMPT_ECHO_ON
        } else {
            pam::constants::PAM_PROMPT_ECHO_OFF
        };
        match self.0.send(style, text) {
            Ok(Some(answer)) => answer
                .as_str()
                .map(|s| Zeroizing::new(s.to_string()))
                .map_err(|_| ConversationError),
            // An application that returns no text for a prompt gave an empty answer.
            Ok(None) => Ok(Zeroizing::new(String::new())),
            Err(_) => Err(ConversationError),
        }
    }

    fn info(&mut self, text: &str) -> Result<(), ConversationError> {
        self.0
            .send(pam::constants::PAM_TEXT_INFO, text)
            .map(|_| ())
            .map_err(|_| ConversationError)
    }

    fn error(&mut self, text: &str) -> Result<(), ConversationError> {
        self.0
            .send(pam::constants::PAM_ERROR_MSG, text)
            .map(|_| ())
            .map_err(|_| ConversationError)
    }
}

/// The application asked for silence (`PAM_SILENT`): informational and error messages are not
/// shown; prompts still are (a prompt is a question, and the login needs its answer).
pub struct Silent<'a>(pub &'a mut dyn Conversation);

impl Conversation for Silent<'_> {
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Zeroizing<String>, ConversationError> {
        self.0.prompt(text, echo)
    }

    fn info(&mut self, _text: &str) -> Result<(), ConversationError> {
        Ok(())
    }

    fn error(&mut self, _text: &str) -> Result<(), ConversationError> {
        Ok(())
    }
}
