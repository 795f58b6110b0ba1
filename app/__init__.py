"""The Streamlit app: `streamlit run app/main.py`. Helpers here hold no tensor math."""
