"""Over-the-air publishing: a TUF repository of models, its CLI, and the device-side client."""
import warnings

# TUF imports securesystemslib's signers, which import Google Cloud KMS, whose google.api_core
# warns on every import that it no longer supports this Python. Nothing here uses a cloud
# signer, and the notice would print on every `tfx-edge` call: silence that one warning only.
warnings.filterwarnings('ignore', category=FutureWarning,
                        module=r'google\.api_core\._python_version_support')
