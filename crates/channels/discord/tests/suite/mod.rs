mod common;
mod deliver;
mod gateway;
