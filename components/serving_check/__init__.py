"""The pre-push serving check (the role of TFX's InfraValidator without a model server binary): the candidate
is loaded the way `tensorflow_model_server` loads it (session + SignatureDef tensor names, `session_model`),
its warm-up file is replayed and every signature is compared with the Python path (`check`); the
`ServingCheck` component (`component`) writes an InfraBlessing that the Pusher's `infra_blessing` reads."""
