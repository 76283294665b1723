from django import forms
from django.contrib.auth.forms import AuthenticationForm

from apps.tenants.services import tenant_from_api_key


class ApiKeySignInForm(forms.Form):
    api_key = forms.CharField(
        label="API key",
        max_length=200,
        strip=True,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True}),
    )

    def clean_api_key(self) -> str:
        raw = self.cleaned_data["api_key"]
        self.tenant = tenant_from_api_key(raw_key=raw)
        if self.tenant is None:
            raise forms.ValidationError("The API key is unknown or revoked.", code="invalid_key")
        return raw


class StaffSignInForm(AuthenticationForm):
    """Django's sign-in form, for staff users only."""

    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise forms.ValidationError(
                "This account is not a staff account; sign in with an API key instead.",
                code="not_staff",
            )
